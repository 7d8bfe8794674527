"""recipes/eval.py (hf-simplegpt evaluate) end to end on a tiny model: results.json, samples, chart, card, table,
--config."""

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from hf_simplegpt.recipes import eval as recipe_module

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"


@pytest.fixture
def recipe():
    return recipe_module


@pytest.fixture
def model_dir(tiny_model, tiny_tokenizer, tmp_path):
    folder = tmp_path / "tiny-sg"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_all_tasks_write_results_samples_chart_and_card(recipe, model_dir, mmlu_dir, tiny_tokenizer, tmp_path, capsys):
    documents = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be, that is the question."]
    texts = tmp_path / "texts.txt"
    texts.write_text("\n\n".join(documents) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"prompt": "The quick brown", "reference": "fox jumps"}\n{"prompt": "To be,", "reference": ["or not"]}\n'
    )
    out = tmp_path / "eval"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--tasks",
            "perplexity,mmlu,bleu",
            "--mmlu_data_dir",
            str(mmlu_dir),
            "--num_fewshot",
            "1",
            "--subjects",
            "abstract_algebra,marketing",
            "--limit",
            "2",
            "--batch_size",
            "3",
            "--output_dir",
            str(out),
            "--perplexity_file",
            str(texts),
            "--stride",
            "32",
            "--bleu_file",
            str(pairs),
            "--max_new_tokens",
            "4",
        ]
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["mmlu"] == results["mmlu"] and saved["mmlu"]["n"] == 4 and saved["mmlu"]["num_fewshot"] == 1
    assert set(saved["mmlu"]["categories"]) == {"stem", "other"}
    # two documents split at the blank line; with BOS prepended every text token is scored
    assert saved["perplexity"]["num_tokens"] == sum(len(tiny_tokenizer(d)["input_ids"]) for d in documents)
    assert saved["bleu"]["reference_length"] == 4 and saved["bleu"]["dataset"] == "pairs.jsonl"
    samples = [json.loads(line) for line in (out / "samples_mmlu.jsonl").read_text().splitlines()]
    assert [(s["subject"], s["doc_id"]) for s in samples] == [
        ("abstract_algebra", 0),
        ("abstract_algebra", 1),
        ("marketing", 0),
        ("marketing", 1),
    ]
    assert (out / "mmlu_categories.png").read_bytes()[:4] == b"\x89PNG"
    card = ModelCard.load(out / "README.md")
    assert {r.metric_type for r in card.data.eval_results} == {"acc", "perplexity", "bleu"}
    printed = capsys.readouterr().out
    assert "| MMLU 1-shot (" in printed and "| perplexity |" in printed and "| BLEU (sacrebleu) |" in printed


def test_config_file_and_push_merge_results_into_the_card_without_touching_the_model_folder(
    recipe, model_dir, mmlu_dir, tmp_path, monkeypatch
):
    from hf_simplegpt.hub import write_model_card

    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: commits.append(kw) or "url")
    # The model folder's own card, as pretraining writes it: a section of its own and a perplexity result.
    write_model_card(
        model_dir,
        results={"perplexity": {"dataset": "held-out", "perplexity": 12.5, "num_tokens": 9}},
        training_procedure="Pretrained on 1,234 deduplicated documents.",
    )
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    config = tmp_path / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(model_dir),
                "tasks": "mmlu",
                "mmlu_data_dir": str(mmlu_dir),
                "subjects": "marketing",
                "output_dir": str(tmp_path / "out"),
                "push_to_hub": True,
                "hub_model_id": "me/tiny",
            }
        )
    )
    for limit in ("1", "2"):  # a second evaluation replaces the first one's entries and section
        results = recipe.main(["--config", str(config), "--limit", limit])  # the flag overrides the file
    assert results["mmlu"]["n"] == 2
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # the model folder is untouched

    sent = {op.path_in_repo: op.path_or_fileobj for op in commits[-1]["operations"]}
    assert sent["README.md"] == str(tmp_path / "out" / "README.md") and sent["results.json"].startswith(str(tmp_path))
    assert sent["model.safetensors"] == str(model_dir / "model.safetensors")
    card = ModelCard.load(sent["README.md"])
    assert "Pretrained on 1,234 deduplicated documents." in card.text  # the original card is kept
    assert card.text.count("## Evaluation (hf-simplegpt evaluate)") == 1 and "MMLU 0-shot (2 questions)" in card.text
    entries = {(r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert ("perplexity", 12.5) in entries and ("acc", results["mmlu"]["acc"]) in entries
    assert sum(r.metric_name == "accuracy" for r in card.data.eval_results) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tasks", "mmlu,rouge"], r"Unknown task\(s\) \['rouge'\]"),
        (["--tasks", "perplexity"], "needs --perplexity_file"),
        (["--tasks", "bleu"], "needs --bleu_file"),
        (["--push_to_hub", "true"], "needs --hub_model_id"),
    ],
)
def test_bad_flags(recipe, flags, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        recipe.main(["--model_name_or_path", str(tmp_path), *flags])


def test_shipped_config_parses(recipe):
    config = CONFIGS / "evaluate_mmlu.yaml"
    (args,) = recipe.parse_args(recipe.EvalArguments, args=["--config", str(config), "--model_name_or_path", "m"])
    assert (args.tasks, args.num_fewshot, args.batch_size, args.mmlu_data_dir) == ("mmlu", 0, 16, None)


def test_crows_pairs_task_writes_results_samples_and_card(recipe, model_dir, tmp_path, capsys):
    from tests.evaluation.test_crows_pairs import PAIRS, write_csv

    out = tmp_path / "eval-crows"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--tasks",
            "crows_pairs",
            "--crows_pairs_file",
            str(write_csv(tmp_path / "pairs.csv", PAIRS)),
            "--output_dir",
            str(out),
        ]
    )
    crows = json.loads((out / "results.json").read_text())["crows_pairs"]
    samples = [json.loads(line) for line in (out / "samples_crows_pairs.jsonl").read_text().splitlines()]
    assert crows["n"] == 4 and crows["ideal"] == 0.5 and crows == results["crows_pairs"]
    assert crows["pct_stereotype"] == sum(s["loglik_more"] > s["loglik_less"] for s in samples) / 4
    assert set(crows["bias_types"]) == {"age", "gender", "race-color"}
    card = ModelCard.load(out / "README.md")
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values["pct_stereotype"] == round(crows["pct_stereotype"], 4) and "pct_stereotype (gender)" in values
    assert "| CrowS-Pairs (4 pairs) | pct_stereotype (ideal 0.5) |" in capsys.readouterr().out


def test_safety_task_scores_refusals_per_category_into_results_and_card(recipe, model_dir, tmp_path):
    out = tmp_path / "eval-safety"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--tasks",
            "safety",
            "--limit",
            "2",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(out),
        ]
    )
    safety = json.loads((out / "results.json").read_text())["safety"]
    samples = [json.loads(line) for line in (out / "samples_safety.jsonl").read_text().splitlines()]
    assert safety == results["safety"] and safety["n"] == 12 == len(samples)  # 2 prompts of each of 6 categories
    assert safety["refusal_rate"] == sum(s["refusal"] for s in samples) / 12
    assert set(safety["categories"]) == {
        "harmbench",
        "discrimination_exclusion_toxicity_hateful_offensive",
        "human_chatbox",
        "information_hazard",
        "malicious_uses",
        "misinformation_harms",
    }
    card = ModelCard.load(out / "README.md")
    assert {r.metric_name for r in card.data.eval_results} >= {"refusal_rate", "refusal_rate (harmbench)"}
    assert "### Safety: refusal rate per category" in card.text and samples[0]["prompt"][:40] in card.text
