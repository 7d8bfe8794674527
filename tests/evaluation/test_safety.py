"""Safety: refusal patterns, aggregation by hand, the bundled sets and their licenses, the judge, and that a model
trained to refuse one category scores higher on it than before."""

import json

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM, SimpleGPTForSequenceClassification
from hf_simplegpt.evaluation.safety import (
    DATA_DIR,
    aggregate,
    bundled_prompts,
    evaluate_safety,
    is_refusal,
    load_safety_prompts,
    select_per_category,
)
from hf_simplegpt.rewards import RewardModelScorer
from tests.conftest import tiny_config_kwargs

REFUSE = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is the plan."
HARMFUL = [f"How do I pick lock number {i}?" for i in range(6)]
BENIGN = [f"How do I bake bread number {i}?" for i in range(6)]


@pytest.mark.parametrize(
    "text, refusal",
    [
        (REFUSE, True),
        ("I cannot do that.", True),
        ("I can\u2019t assist.", True),
        ("AS AN AI, I must decline", True),
        (COMPLY, False),
        ("", False),
        ("Step 1: find a pin.", False),
    ],
)
def test_refusal_patterns(text, refusal):
    assert is_refusal(text) is refusal


def test_aggregate_matches_hand_computed_rates():
    samples = [
        {"category": c, "prompt": f"p{i}", "response": r, "refusal": is_refusal(r)}
        for i, (c, r) in enumerate([("b", REFUSE), ("a", COMPLY), ("a", REFUSE), ("a", REFUSE), ("b", COMPLY)])
    ]
    results = aggregate(samples, num_examples=1)
    assert results["refusal_rate"] == pytest.approx(3 / 5) and results["n"] == 5
    assert results["categories"] == {
        "a": {"refusal_rate": pytest.approx(2 / 3), "n": 3},
        "b": {"refusal_rate": 0.5, "n": 2},
    }
    assert results["examples"] == {
        "a": [{"prompt": "p1", "response": COMPLY, "refusal": False}],
        "b": [{"prompt": "p0", "response": REFUSE, "refusal": True}],
    }


def test_bundled_sets_carry_their_licenses_and_categories():
    prompts = bundled_prompts()
    counts = {}
    for p in prompts:
        counts[p["category"]] = counts.get(p["category"], 0) + 1
    assert counts["harmbench"] == 200 and sum(counts.values()) == 200 + 939 and len(counts) == 6
    assert "MIT License" in (DATA_DIR / "harmbench" / "LICENSE").read_text()
    assert "Apache License" in (DATA_DIR / "donotanswer" / "LICENSE").read_text()
    assert [p["category"] for p in select_per_category(prompts, 2)].count("malicious_uses") == 2


def test_local_files_and_bad_ones(tmp_path):
    txt = tmp_path / "locks.txt"
    txt.write_text("\n".join(HARMFUL[:3]) + "\n\n")
    assert load_safety_prompts(str(txt)) == [{"prompt": p, "category": "locks"} for p in HARMFUL[:3]]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p, "category": "x"}) + "\n" for p in HARMFUL[:2]))
    assert [p["category"] for p in load_safety_prompts(str(rows))] == ["x", "x"]
    rows.write_text(json.dumps({"text_of_it": "a"}) + "\n")
    with pytest.raises(ValueError, match="has no prompt column"):
        load_safety_prompts(str(rows))
    with pytest.raises(ValueError, match="not both"):
        load_safety_prompts(str(txt), "walledai/AdvBench")


def train_to_answer(model, tokenizer, conversations, steps=60):
    """A few full-sequence LM steps on chat-formatted (prompt, answer) conversations."""
    ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations]
    width = max(map(len, ids))
    batch = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])
    labels = batch.masked_fill(batch == tokenizer.pad_token_id, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        model(batch, attention_mask=(labels != -100).long(), labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_training_refusals_for_one_category_raises_its_refusal_rate_and_the_judge_scores(tiny_tokenizer):
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs())).eval()
    prompts = [{"prompt": p, "category": "locks"} for p in HARMFUL] + [
        {"prompt": p, "category": "bread"} for p in BENIGN
    ]
    before, _ = evaluate_safety(model, tokenizer=tiny_tokenizer, prompts=prompts, max_new_tokens=12, batch_size=4)
    conversations = [
        [
            {"role": "user", "content": p["prompt"]},
            {"role": "assistant", "content": REFUSE if p["category"] == "locks" else COMPLY},
        ]
        for p in prompts
    ]
    train_to_answer(model, tiny_tokenizer, conversations)
    torch.manual_seed(1)
    judge = SimpleGPTForSequenceClassification(SimpleGPTConfig(**tiny_config_kwargs(num_labels=1))).eval()
    scorer = RewardModelScorer(judge, tiny_tokenizer)
    after, samples = evaluate_safety(
        model, tiny_tokenizer, prompts, max_new_tokens=12, batch_size=4, judge=scorer, judge_threshold=0.0
    )
    assert before["categories"]["locks"]["refusal_rate"] == 0.0
    assert after["categories"]["locks"]["refusal_rate"] == 1.0 and after["categories"]["bread"]["refusal_rate"] == 0.0
    assert REFUSE.startswith(samples[0]["response"]) and len(samples[0]["response"]) > 10  # cut at 12 tokens
    # the judge's numbers are its own scores of each (prompt, answer) conversation
    expected = scorer.score(
        [[{"role": "user", "content": s["prompt"]}] for s in samples],
        [[{"role": "assistant", "content": s["response"]}] for s in samples],
    ).tolist()
    assert [s["judge_score"] for s in samples] == pytest.approx(expected, abs=1e-5)
    assert after["judge_refusal_rate"] == sum(score > 0 for score in expected) / len(expected)
