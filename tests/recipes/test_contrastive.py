"""hf-simplegpt contrastive, make-pairs, evaluate --tasks retrieval and /v1/embeddings, on a tiny SimpleGPT."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM, contrastive
from hf_simplegpt.hub import hub_files, sentence_transformers_files
from hf_simplegpt.synthetic import write_jsonl
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer
from tests.conftest import QUIET, WORDS, tiny_config_kwargs

# Pairs that share no word, with a signal a tiny model learns in seconds: every word of the anchor has a partner word
# in the positive (a random encoder cannot know which).
VOCABULARY = sorted(set(WORDS))
PARTNER = dict(zip(VOCABULARY[::2], VOCABULARY[1::2]))
TOPICS = list(dict.fromkeys(tuple(random.Random(i).sample(sorted(PARTNER), 4)) for i in range(400)))[:120]


def topic_pairs() -> list[dict]:
    return [{"anchor": " ".join(words), "positive": " ".join(PARTNER[w] for w in words)} for words in TOPICS]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A seeded random 2-layer SimpleGPT (dropout on, as a pretrained folder has) with its tokenizer."""
    folder = tmp_path_factory.mktemp("contrastive") / "base"
    tokenizer = train_tokenizer([" ".join(WORDS)] * 20, vocab_size=300, model_max_length=32)
    torch.manual_seed(0)
    config = SimpleGPTConfig(
        **tiny_config_kwargs(max_position_embeddings=32, dropout=0.1, **special_token_ids(tokenizer))
    )
    SimpleGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(base_dir) -> Path:
    return write_jsonl(topic_pairs(), base_dir.parent / "pairs.jsonl")


def train(base_dir, pairs_file, out, *flags):
    from hf_simplegpt.recipes import contrastive as recipe

    return recipe.main(
        [
            "--model_name_or_path",
            str(base_dir),
            "--train_file",
            str(pairs_file),
            "--output_dir",
            str(out),
            "--heldout_size",
            "40",
            "--per_device_train_batch_size",
            "16",
            "--num_train_epochs",
            "4",
            "--learning_rate",
            "3e-3",
            *map(str, flags),
            *QUIET,
        ]
    )


@pytest.fixture(scope="module")
def encoder_dir(base_dir, pairs_file) -> tuple[Path, dict]:
    out = base_dir.parent / "encoder"
    return out, train(base_dir, pairs_file, out)  # mean pooling, causal attention: the defaults


@pytest.fixture(scope="module")
def last_token_dir(base_dir) -> Path:
    """An untrained last-token, bidirectional encoder, saved as the recipe saves one."""
    out = base_dir.parent / "last-token"
    contrastive.build_encoder(str(base_dir), "last-token", "bidirectional", device="cpu").save_pretrained(str(out))
    return out


def test_training_improves_held_out_retrieval(encoder_dir):
    _, report = encoder_dir
    before, after = report["heldout"]["before"], report["heldout"]["after"]
    assert report["heldout"]["after"]["queries"] == 40 and report["steps"] == 4 * 5  # 80 pairs, batches of 16
    assert after["mrr@10"] > before["mrr@10"] + 0.2, report["heldout"]
    assert after["recall@10"] >= before["recall@10"] and after["recall@10"] > 0.8


def test_mini_batch_size_caches_the_same_loss_and_gradients(base_dir, pairs_file, tmp_path):
    """--mini_batch_size (CachedMultipleNegativesRankingLoss, GradCache) trains the same weights as the plain loss
    over the same batches: plain SGD and no dropout, so the two differ only by float rounding."""
    still = tmp_path / "no-dropout"
    model = SimpleGPTForCausalLM.from_pretrained(base_dir)
    model.config.embedding_dropout = model.config.residual_dropout = model.config.attention_dropout = 0.0
    model.save_pretrained(still)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(still)
    flags = ("--num_train_epochs", "1", "--optim", "sgd", "--learning_rate", "0.5", "--warmup_steps", "0")
    plain = train(still, pairs_file, tmp_path / "plain", *flags)
    cached = train(still, pairs_file, tmp_path / "cached", *flags, "--mini_batch_size", "4")
    assert (plain["loss"], cached["loss"]) == ("MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss")
    assert plain["steps"] == cached["steps"] == 5 and cached["batch_size"] == 16  # 80 pairs, batches of 16
    vectors = {n: contrastive.load_encoder(str(tmp_path / n), device="cpu").encode(TEXTS) for n in ("plain", "cached")}
    untrained = contrastive.build_encoder(str(still), device="cpu").encode(TEXTS)
    assert np.abs(vectors["plain"] - untrained).max() > 1e-2  # it trained
    np.testing.assert_allclose(vectors["cached"], vectors["plain"], atol=1e-4)


LOAD_ELSEWHERE = """
import json, sys
from sentence_transformers import SentenceTransformer
from transformers import AutoModel
out = {}
for folder in sys.argv[1:]:
    model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
    backbone = AutoModel.from_pretrained(folder, trust_remote_code=True)
    out[folder] = {"vectors": model.encode(TEXTS).tolist(), "backbone": type(backbone).__name__,
                   "causal": backbone.config.is_causal, "last_id": model.tokenizer("the fox")["input_ids"][-1],
                   "pooling": model[1].pooling_mode}
out["imported"] = "hf_simplegpt" in sys.modules
print(json.dumps(out))
"""
TEXTS = ["the quick brown fox", "seven wizards hex jovial kings", "grey clouds under the sea"]


def test_the_folders_load_in_a_fresh_process_without_hf_simplegpt(encoder_dir, last_token_dir):
    folders = [str(encoder_dir[0]), str(last_token_dir)]
    code = f"TEXTS = {TEXTS!r}\n" + LOAD_ELSEWHERE
    result = subprocess.run(
        [sys.executable, "-c", code, *folders], capture_output=True, text=True, timeout=300, cwd=last_token_dir.parent
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert not out["imported"]
    trained, last_token = out[folders[0]], out[folders[1]]
    assert trained["backbone"] == last_token["backbone"] == "SimpleGPTModel"
    assert trained["causal"] is True and last_token["causal"] is False  # each attends as it was built
    assert (trained["pooling"], last_token["pooling"]) == ("mean", "lasttoken")
    eos = AutoTokenizer.from_pretrained(last_token_dir.parent / "base").eos_token_id
    assert last_token["last_id"] == eos and trained["last_id"] != eos  # only last-token pooling appends EOS
    for folder in folders:
        vectors = np.array(out[folder]["vectors"])
        np.testing.assert_allclose(vectors, contrastive.load_encoder(folder, device="cpu").encode(TEXTS), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_card_and_hub_files_are_a_sentence_transformers_models(encoder_dir):
    folder, report = encoder_dir
    card = (folder / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "pipeline_tag: sentence-similarity" in card
    assert 'SentenceTransformer("encoder", trust_remote_code=True)' in card
    assert f"| after training | {report['heldout']['after']['recall@1']:.3f}" in card
    extra = sentence_transformers_files(folder)
    assert {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json"} <= set(extra)
    files = hub_files(folder, ("contrastive.json", *extra))
    assert {"model.safetensors", "modeling_simplegpt.py", "tokenizer.json", "1_Pooling/config.json"} <= set(files)
    assert "generation_config.json" not in files and not any(f.startswith("checkpoint") for f in files)


def test_attention_flag_switches_what_a_token_sees(base_dir):
    first_token = {}
    for attention in contrastive.ATTENTION:
        encoder = contrastive.build_encoder(str(base_dir), "mean", attention, device="cpu").eval()
        backbone = encoder[0].model
        ids = encoder.tokenizer(["the quick brown fox", "the lazy grey dog"], return_tensors="pt", padding=True)
        with torch.no_grad():
            hidden = backbone(**ids).last_hidden_state
        first_token[attention] = (hidden[0, 0] - hidden[1, 0]).abs().max().item()
    assert first_token["causal"] < 1e-6  # "the" sees only itself
    assert first_token["bidirectional"] > 1e-3  # and here the rest of the text


def test_mean_pooling_ignores_padding_and_appends_no_eos(base_dir):
    encoder = contrastive.build_encoder(str(base_dir), "mean", "bidirectional", device="cpu")
    assert encoder.tokenizer("the fox")["input_ids"][-1] != encoder.tokenizer.eos_token_id
    alone = encoder.encode(["the fox"])
    padded = encoder.encode(["the fox", "the quick brown fox jumps over a lazy dog"])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_from_scratch_keeps_the_shape_and_drops_the_weights(base_dir):
    pretrained = contrastive.build_encoder(str(base_dir), device="cpu")[0].model
    torch.manual_seed(1)
    scratch = contrastive.build_encoder(str(base_dir), from_scratch=True, device="cpu")[0].model
    assert scratch.config.to_dict() == pretrained.config.to_dict()
    assert not torch.equal(scratch.embed_tokens.weight, pretrained.embed_tokens.weight)


def test_tfidf_baseline_scores_with_the_same_metrics():
    rows = [
        {"anchor": "red apple pie", "positive": "a pie of red apples"},
        {"anchor": "blue ocean waves", "positive": "waves on the blue ocean"},
        {"anchor": "green forest trail", "positive": "a trail through the green forest"},
    ]
    evaluator = contrastive.retrieval_evaluator(rows)
    metrics = contrastive.scored_retrieval(contrastive.tfidf_scores(evaluator), evaluator)[0]
    assert metrics["recall@1"] == 1.0 and metrics["mrr@10"] == 1.0 and metrics["queries"] == 3


def test_scored_retrieval_matches_the_evaluator_and_splits_recall_by_query(base_dir):
    """The benchmark's path (a score matrix, then the evaluator's metric code) gives the evaluator's own numbers, and
    the per-query recall@10 that paired comparisons use averages to them."""
    encoder = contrastive.build_encoder(str(base_dir), "mean", "causal", device="cpu")  # untrained: finds some
    rows = topic_pairs()[:40]
    evaluator = contrastive.retrieval_evaluator(rows)
    metrics, recalls = contrastive.scored_retrieval(contrastive.encoder_scores(encoder, evaluator), evaluator)
    assert metrics == pytest.approx(contrastive.retrieval_metrics(encoder, rows), abs=1e-9)
    assert len(recalls) == 40 and recalls.mean() == pytest.approx(metrics["recall@10"], abs=1e-12)
    assert 0 < metrics["recall@10"] < 1 and set(recalls) == {0.0, 1.0}  # some found, some missed: a real split


def test_make_pairs_from_text_pairs_neighbours_within_passages(tmp_path):
    from hf_simplegpt.recipes import make_pairs

    text = (
        "First Citizen:\nBefore we proceed any further, hear me speak.\nYou are all resolved rather to die.\n\n"
        "All:\nResolved. resolved.\nWe know it, we know it.\n"
    )
    path = make_pairs.main(
        ["--text_file", str(_write(tmp_path / "t.txt", text)), "--output", str(tmp_path / "p.jsonl")]
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"anchor": "Before we proceed any further, hear me speak.", "positive": "You are all resolved rather to die."}
    ]  # names and 2-word lines skipped
    sentences = contrastive.make_text_pairs("One two three. Four five six! Seven eight nine?", "sentence")
    assert [r["anchor"] for r in sentences] == ["One two three.", "Four five six!"]


def test_make_pairs_from_mmlu_pairs_questions_with_correct_answers(mmlu_dir, tmp_path):
    pairs = contrastive.make_mmlu_pairs(str(mmlu_dir), "test", min_words=1)
    assert {"anchor": "What is the identity of (Z, +)?", "positive": "0"} in pairs  # letter answer B
    assert {"anchor": "Market segmentation divides a market into", "positive": "groups"} in pairs  # 0-3 answer 1
    assert len(pairs) == 5


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "rows, says",
    [
        ([{"anchor": "a b c", "text": "d e f"}], "lacks the column(s) ['positive']"),
        ([{"anchor": "a b c", "positive": "d e f"}, {"anchor": "g h", "positive": "  "}], "Row 2 of the training data"),
        ([{"anchor": "a b c", "positive": "d e f"}, {"anchor": "g h", "positive": "g  h"}], "are the same text"),
        (
            [
                {"anchor": "a b c", "positive": "d e f"},
                {"anchor": "x", "positive": "y"},
                {"anchor": "a b c", "positive": "d e f"},
            ],
            "Row 3 of the training data (--train_file",
        ),
    ],
)
def test_bad_pairs_are_refused_before_training(rows, says, base_dir, tmp_path):
    fillers = [{key: f"filler {i} {key}" for key in rows[0]} for i in range(8)]
    pairs = write_jsonl(rows + fillers, tmp_path / "bad.jsonl")
    with pytest.raises(ValueError) as error:
        train(base_dir, pairs, tmp_path / "out")
    assert says in str(error.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_duplicate_pair_error_names_both_rows(base_dir, tmp_path):
    rows = [
        {"anchor": "a b c", "positive": "d e f"},
        {"anchor": "x y", "positive": "y z"},
        {"anchor": "a  b c", "positive": "d e f "},
    ] + [{"anchor": f"fill {i}", "positive": f"er {i}"} for i in range(8)]
    with pytest.raises(ValueError, match="Row 3 .* repeats the pair of row 1"):
        train(base_dir, write_jsonl(rows, tmp_path / "dup.jsonl"), tmp_path / "out")


def test_evaluate_retrieval_on_an_encoder_and_on_a_plain_folder(encoder_dir, base_dir, pairs_file, tmp_path):
    from hf_simplegpt.recipes import eval as eval_recipe

    folder, report = encoder_dir
    heldout = write_jsonl(topic_pairs()[:40], tmp_path / "heldout.jsonl")
    results = {}
    for name, model in (("encoder", folder), ("plain", base_dir)):
        results[name] = eval_recipe.main(
            [
                "--model_name_or_path",
                str(model),
                "--tasks",
                "retrieval",
                "--retrieval_file",
                str(heldout),
                "--output_dir",
                str(tmp_path / name),
            ]
        )
        assert json.loads((tmp_path / name / "results.json").read_text())["retrieval"] == results[name]["retrieval"]
    assert results["encoder"]["retrieval"]["queries"] == 40
    assert results["encoder"]["retrieval"]["mrr@10"] > results["plain"]["retrieval"]["mrr@10"] + 0.2
    card = (tmp_path / "encoder" / "README.md").read_text()
    assert "recall@10" in card and "library_name: sentence-transformers" in card  # the encoder's card, results merged
