"""CrowS-Pairs: lm-evaluation-harness's crows_pairs_english protocol, hand-computed aggregates, the real data, bad input."""

import csv
import math

import pytest
import torch

from hf_simplegpt.evaluation import crows_pairs
from hf_simplegpt.evaluation.crows_pairs import aggregate, evaluate_crows_pairs, load_crows_pairs
from tests.conftest import SHARED_DATA

REAL_FILE = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
PAIRS = [
    {
        "sent_more": "The quick brown fox jumps over the lazy dog.",
        "sent_less": "The quick brown cat jumps over the lazy dog.",
        "bias_type": "age",
    },
    {
        "sent_more": "To be, or not to be, that is the question.",
        "sent_less": "To go, or not to go, that is the question.",
        "bias_type": "gender",
    },
    {"sent_more": "All that glitters is not gold.", "sent_less": "All that shines is not gold.", "bias_type": "gender"},
    {"sent_more": "The sun rises in the east.", "sent_less": "The sun rises in the west.", "bias_type": "race-color"},
]


def write_csv(path, rows):
    """The original file's layout: an unnamed index column, then the fields (and others the task ignores)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        writer.writerows([i, r["sent_more"], r["sent_less"], "stereo", r["bias_type"]] for i, r in enumerate(rows))
    return path


def sentence_loglik(model, tokenizer, sentence):
    """Summed log-probability of every token of the sentence after BOS, one request at a time."""
    ids = [tokenizer.bos_token_id] + tokenizer(sentence, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids[:-1]])).logits[0].log_softmax(-1)
    return sum(logprobs[j, t].item() for j, t in enumerate(ids[1:]))


def test_aggregate_matches_hand_computed_values():
    more, less = [-10.0, -20.0, -5.0, -7.0, -3.0], [-12.0, -15.0, -5.0, -9.0, -4.0]
    results = aggregate(more, less, ["age", "age", "gender", "gender", "race"])
    # stereotype preferred in pairs 0, 3, 4 (pair 2 is a tie: counts 0, as in the harness)
    assert results["pct_stereotype"] == pytest.approx(3 / 5)
    assert results["likelihood_diff"] == pytest.approx((2 + 5 + 0 + 2 + 1) / 5)
    # the harness's stderr of a mean: sample standard deviation / sqrt(n)
    assert results["pct_stereotype_stderr"] == pytest.approx(math.sqrt((3 * 0.4**2 + 2 * 0.6**2) / 4 / 5))
    assert results["ideal"] == 0.5 and results["n"] == 5
    assert results["bias_types"]["age"] == pytest.approx(
        {"pct_stereotype": 0.5, "pct_stereotype_stderr": 0.5, "likelihood_diff": 3.5, "n": 2}
    )
    assert results["bias_types"]["gender"]["pct_stereotype"] == 0.5
    assert results["bias_types"]["race"]["n"] == 1 and results["bias_types"]["race"]["pct_stereotype_stderr"] is None
    assert list(results["bias_types"]) == ["age", "gender", "race"]


def test_sentence_scores_are_whole_sentence_logliks_after_bos(trained_tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    results, samples = evaluate_crows_pairs(model, tokenizer, PAIRS, batch_size=3)
    reference = [
        (sentence_loglik(model, tokenizer, p["sent_more"]), sentence_loglik(model, tokenizer, p["sent_less"]))
        for p in PAIRS
    ]
    assert [(s["loglik_more"], s["loglik_less"]) for s in samples] == [pytest.approx(r, abs=1e-4) for r in reference]
    preferred = [more > less for more, less in reference]
    assert [s["stereotype"] for s in samples] == preferred and 0 < sum(preferred) < 4  # both outcomes occur
    assert results["pct_stereotype"] == sum(preferred) / 4
    assert results["bias_types"]["gender"]["n"] == 2


def test_parity_with_lm_evaluation_harness(tiny_model, tiny_tokenizer, tmp_path):
    """The harness's own crows_pairs_english config (its doc_to_choice and process_results), on a local copy of the
    rows, through its HFLM wrapper around the same model: identical per-sentence scores and metrics."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks.crows_pairs import utils

    path = write_csv(tmp_path / "pairs.csv", PAIRS)
    config = {
        "task": "crows_pairs_local",
        "dataset_path": "csv",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "",
        "doc_to_target": 0,
        "doc_to_choice": utils.doc_to_choice,
        "target_delimiter": "",
        "process_results": utils.process_results,
        "metric_list": [
            {"metric": m, "aggregation": "mean", "higher_is_better": False}
            for m in ("likelihood_diff", "pct_stereotype")
        ],
    }
    # A task manager without lm-eval's bundled tasks: indexing their thousands of YAML files took 40 s here.
    harness = lm_eval.simple_evaluate(
        model=HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=2),
        tasks=[config],
        log_samples=True,
        task_manager=TaskManager(include_defaults=False),
    )
    theirs = {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in harness["samples"]["crows_pairs_local"]}
    ours, samples = evaluate_crows_pairs(tiny_model, tiny_tokenizer, load_crows_pairs(str(path)), batch_size=3)
    for sample in samples:
        assert [sample["loglik_more"], sample["loglik_less"]] == pytest.approx(theirs[sample["doc_id"]], abs=1e-4)
    metrics = harness["results"]["crows_pairs_local"]
    assert ours["pct_stereotype"] == pytest.approx(metrics["pct_stereotype,none"])
    assert ours["pct_stereotype_stderr"] == pytest.approx(metrics["pct_stereotype_stderr,none"])
    assert ours["likelihood_diff"] == pytest.approx(metrics["likelihood_diff,none"], abs=1e-4)


def test_the_real_file_loads_as_is():
    if not REAL_FILE.is_file():
        pytest.skip(f"no {REAL_FILE}")
    pairs = load_crows_pairs(str(REAL_FILE))
    assert len(pairs) == 1508
    assert {p["bias_type"] for p in pairs} == {
        "race-color",
        "socioeconomic",
        "gender",
        "disability",
        "nationality",
        "sexual-orientation",
        "physical-appearance",
        "religion",
        "age",
    }


def test_bad_files_and_offline_hub_name_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "bad.csv"
    path.write_text("sent_more,sent_less\na,b\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['bias_type'\]"):
        load_crows_pairs(str(path))
    path.write_text("sent_more,sent_less,bias_type\na,b,age\nc,,age\n")
    with pytest.raises(ValueError, match="Row 2 of the --crows_pairs_file"):
        load_crows_pairs(str(path))

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(ValueError, match="Offline, pass a local copy with --crows_pairs_file") as error:
        load_crows_pairs(None)
    assert crows_pairs.HUB_DATASET in str(error.value)
