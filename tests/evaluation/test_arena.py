"""hf-simplegpt arena: standings by hand, the votes file and its errors, the DPO export, and the page in chromium."""

import importlib.util
import json
import math
import os

import pytest

from hf_simplegpt.alignment import validate_preference_dataset
from hf_simplegpt.data import load_files
from hf_simplegpt.evaluation import arena
from hf_simplegpt.evaluation.arena import bradley_terry, preference_rows, read_votes, win_rates
from tests.serving.test_chat_page import CHROMIUM, CHROMIUM_FLAGS, TIMEOUT_MS


def vote(a, b, kind, prompt="p"):
    return {
        "prompt": prompt,
        "model_a": a,
        "model_b": b,
        "answer_a": f"{a} says",
        "answer_b": f"{b} says",
        "vote": kind,
    }


def test_win_rates_and_bradley_terry_by_hand():
    votes = [vote("x", "y", "a"), vote("y", "x", "b"), vote("x", "y", "a"), vote("x", "y", "b"), vote("x", "y", "tie")]
    rates = win_rates(votes, num_bootstrap=200)
    assert rates["x"]["win_rate"] == pytest.approx(3.5 / 5) and rates["y"]["win_rate"] == pytest.approx(1.5 / 5)
    assert rates["x"]["battles"] == 5 and 0 <= rates["x"]["ci_low"] <= 0.7 <= rates["x"]["ci_high"] <= 1
    assert win_rates(votes, num_bootstrap=200) == rates  # seeded
    # x: 3.5 wins of 5 battles, plus one virtual tie per pair: 4 of 6, so p_x / p_y = 4 / 2
    scores = bradley_terry(votes)
    assert scores["x"] - scores["y"] == pytest.approx(400 * math.log10(2.0), abs=1e-6)
    assert (scores["x"] + scores["y"]) / 2 == pytest.approx(1000)


def test_bradley_terry_solves_its_score_equations_for_three_models():
    votes = [vote("x", "y", "a")] * 3 + [vote("y", "z", "a")] * 2 + [vote("z", "x", "a"), vote("x", "z", "both_bad")]
    scores = bradley_terry(votes)
    p = {m: 10 ** ((s - 1000) / 400) for m, s in scores.items()}
    games = {("x", "y"): 4, ("y", "z"): 3, ("x", "z"): 3}  # battles + the virtual tie
    wins = {"x": 3 + 0.5 + 1, "y": 2 + 1, "z": 1 + 0.5 + 1}  # battles, 'both bad' as half, half of each virtual tie
    for m in p:
        expected = sum(n * p[m] / (p[i] + p[j]) for (i, j), n in games.items() if m in (i, j))
        assert wins[m] == pytest.approx(expected, rel=1e-6)
    assert sum(wins.values()) == sum(games.values()) and max(scores, key=scores.get) == "x"


def test_a_malformed_votes_file_names_the_line(tmp_path):
    path = tmp_path / "votes.jsonl"
    path.write_text(json.dumps(vote("x", "y", "a")) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"votes.jsonl:2: not JSON"):
        read_votes(path)
    path.write_text(json.dumps(vote("x", "y", "a")) + "\n\n" + json.dumps(vote("x", "y", "maybe")) + "\n")
    with pytest.raises(ValueError, match=r"votes.jsonl:3: vote 'maybe' is not one of a, b, tie, both_bad"):
        read_votes(path)
    path.write_text(json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"votes.jsonl:1: the vote lacks \['model_a'"):
        read_votes(path)


def test_export_writes_trl_preferences_that_dpo_accepts(tmp_path, capsys):
    votes_file = tmp_path / "votes.jsonl"
    votes_file.write_text(
        "".join(
            json.dumps(v) + "\n"
            for v in [
                vote("x", "y", "a", "q1"),
                vote("x", "y", "b", "q2"),
                vote("x", "z", "tie"),
                vote("y", "z", "both_bad"),
            ]
        )
    )
    prefs = tmp_path / "prefs.jsonl"
    arena.main(["--export", str(votes_file), "--output", str(prefs), "--num_bootstrap", "50"])
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert rows == preference_rows(read_votes(votes_file)) and len(rows) == 2  # the tie and 'both bad' carry none
    assert rows[1] == {
        "prompt": [{"role": "user", "content": "q2"}],
        "chosen": [{"role": "assistant", "content": "y says"}],
        "rejected": [{"role": "assistant", "content": "x says"}],
    }
    assert validate_preference_dataset(load_files(str(prefs), "--train_file")) == "conversational"  # dpo's own check
    printed = capsys.readouterr().out
    assert "| x | 3 | 0.500 |" in printed and "Bradley-Terry" in printed and "Wrote 2 preference pairs" in printed


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: apt-get install -y chromium")
@pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or importlib.util.find_spec("gradio") is None,
    reason="playwright or gradio is not installed",
)
def test_votes_in_a_real_browser(tiny_model, tiny_tokenizer, trained_tiny_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.serving.conftest import free_port

    untrained = tmp_path / "untrained"
    tiny_model.save_pretrained(untrained)
    tiny_tokenizer.save_pretrained(untrained)
    models = [str(trained_tiny_dir), str(untrained)]
    names = {"model", "untrained"}
    votes_path = tmp_path / "votes.jsonl"
    prompts = ["The quick brown fox", "To be, or not to be", "All that glitters"]
    page_arena = arena.Arena(models, str(votes_path), prompts, max_new_tokens=6, seed=0)
    page = arena.build_page(page_arena)
    port = free_port()
    page.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                web = browser.new_page()
                web.goto(f"http://127.0.0.1:{port}/", timeout=TIMEOUT_MS)
                box = web.locator("#arena-prompt textarea")
                for turn, (kind, label) in enumerate([("a", "A is better"), ("tie", "Tie")]):
                    assert box.input_value(timeout=TIMEOUT_MS) == prompts[turn]  # the file's next prompt
                    web.locator("#arena-ask").click()
                    web.locator("#arena-a [data-testid='bot']").wait_for(timeout=TIMEOUT_MS)
                    web.locator("#arena-b [data-testid='bot']").wait_for(timeout=TIMEOUT_MS)
                    vote_button = web.get_by_role("button", name=label)
                    vote_button.wait_for(timeout=TIMEOUT_MS)
                    web.wait_for_function("b => !b.disabled", arg=vote_button.element_handle(), timeout=TIMEOUT_MS)
                    assert not any(f"`{n}`" in web.locator("#arena-reveal").inner_text() for n in names)  # anonymous
                    vote_button.click()
                    web.get_by_text("Model A was").wait_for(timeout=TIMEOUT_MS)
                    saved = read_votes(votes_path)  # on disk as soon as the names show
                    assert len(saved) == turn + 1 and saved[-1]["vote"] == kind
                    reveal = web.locator("#arena-reveal").inner_text()
                    assert saved[-1]["model_a"] in reveal and saved[-1]["model_b"] in reveal
                    web.wait_for_function(
                        f"() => document.querySelector('#arena-prompt textarea').value === "
                        f"{json.dumps(prompts[turn + 1])}",
                        timeout=TIMEOUT_MS,
                    )
            finally:
                browser.close()
    finally:
        page.close()
    saved = read_votes(votes_path)
    assert [v["prompt"] for v in saved] == prompts[:2] and {saved[0]["model_a"], saved[0]["model_b"]} == names
    for v in saved:  # the answers shown are the models' greedy answers
        assert v["answer_a"] == page_arena.answer(v["model_a"], v["prompt"])
    # a restart continues the file: the next prompt is the first one not voted on
    assert arena.Arena(models, str(votes_path), prompts, max_new_tokens=6).next_prompt() == prompts[2]
