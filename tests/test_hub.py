"""Model card rendering and the exact Hub upload set, without network."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from hf_simplegpt.hub import TEMPLATES_DIR, hub_files, push_to_hub, write_model_card

RESULTS = {
    "mmlu": {
        "acc": 0.27,
        "acc_stderr": 0.0123,
        "n": 200,
        "num_fewshot": 5,
        "limit": None,
        "categories": {"stem": {"acc": 0.25, "n": 120}, "humanities": {"acc": 0.3, "n": 80}},
    },
    "perplexity": {"dataset": "tinyshakespeare-val", "perplexity": 42.123456, "num_tokens": 1000},
}
EXPECTED_UPLOAD = [
    "README.md",
    "chat_template.jinja",
    "config.json",
    "configuration_simplegpt.py",
    "generation_config.json",
    "model.safetensors",
    "modeling_simplegpt.py",
    "results.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture
def model_dir(tiny_model, tiny_tokenizer, tmp_path):
    """A saved tiny model with its card and results, plus training leftovers that must not be uploaded."""
    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / "results.json").write_text(json.dumps(RESULTS))
    write_model_card(folder, results=RESULTS, datasets=["tinyshakespeare"])
    for junk in ("optimizer.pt", "training_args.bin", "pytorch_model.bin", "trainer_state.json"):
        (folder / junk).write_bytes(b"x")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    return folder


def test_card_metadata_holds_the_results(model_dir):
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == ["tinyshakespeare"]
    found = {(r.dataset_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert found == {
        ("cais/mmlu", "accuracy"): 0.27,
        ("cais/mmlu", "accuracy (stem)"): 0.25,
        ("cais/mmlu", "accuracy (humanities)"): 0.3,
        ("tinyshakespeare-val", "perplexity"): 42.1235,
    }
    mmlu = next(r for r in card.data.eval_results if r.metric_name == "accuracy")
    assert (mmlu.dataset_split, mmlu.dataset_args, mmlu.metric_type) == ("test", {"num_few_shot": 5}, "acc")
    text = card.text
    assert "| MMLU 5-shot (200 questions) | accuracy | 0.2700 ± 0.0123 |" in text
    assert "| tinyshakespeare-val (1000 tokens) | perplexity | 42.123 |" in text
    assert "| max_position_embeddings | 64 |" in text  # architecture table from config.json
    for risk in ("Hallucination", "Bias", "Knowledge cutoff", "Context length"):
        assert f"**{risk}**" in text
    assert "at most 64 tokens" in text


def test_card_without_results_and_with_recipe_context(tmp_path):
    path = write_model_card(
        tmp_path,
        model_name="sg-sft",
        training_procedure="SFT with TRL for 3 epochs.",
        hyperparameters={"learning_rate": 2e-5},
        base_model="me/sg-base",
    )
    card = ModelCard.load(path)
    assert card.data.eval_results is None and card.data.base_model == "me/sg-base"
    assert "SFT with TRL for 3 epochs." in card.text and "| learning_rate | 2e-05 |" in card.text
    assert "Not evaluated yet" in card.text and card.text.startswith("\n# sg-sft")


def test_unknown_template_lists_available(tmp_path):
    with pytest.raises(ValueError, match=r"'nope\.md' not found.*model_card\.md"):
        write_model_card(tmp_path, template="nope.md")
    assert (TEMPLATES_DIR / "model_card.md").is_file()


def test_upload_sends_exactly_the_hub_files(model_dir, monkeypatch):
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: calls.setdefault("commit", kw) and "commit-url")
    assert hub_files(model_dir) == EXPECTED_UPLOAD
    push_to_hub(model_dir, "me/tiny-simplegpt", private=True)
    assert calls["repo"] == ("me/tiny-simplegpt", {"private": True, "exist_ok": True, "repo_type": "model"})
    commit = calls["commit"]
    assert commit["repo_id"] == "me/tiny-simplegpt"
    # one commit of exactly these files, each read from the model folder
    assert [op.path_in_repo for op in commit["operations"]] == EXPECTED_UPLOAD
    assert [op.path_or_fileobj for op in commit["operations"]] == [str(model_dir / n) for n in EXPECTED_UPLOAD]


def test_missing_pieces_are_named(model_dir):
    (model_dir / "README.md").unlink()
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(
        ValueError, match=r"missing: safetensors weights.*README\.md \(hf_simplegpt\.hub\.write_model_card\)"
    ):
        hub_files(model_dir)


def test_config_without_auto_map_is_refused(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    del config["auto_map"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map in config.json"):
        hub_files(model_dir)


LOAD_WITHOUT_PACKAGE = """
import json, sys, torch
sys.modules["hf_simplegpt"] = None  # any import of the project package now fails
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
ids = tokenizer("The quick brown fox", return_tensors="pt")["input_ids"]
with torch.no_grad():
    logits = model(ids).logits
print(json.dumps({"module": type(model).__module__, "ids": ids[0].tolist(), "logits": logits[0, -1, :8].tolist()}))
"""


def test_uploaded_set_loads_in_a_fresh_process_without_hf_simplegpt(model_dir, tiny_model, tiny_tokenizer, tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    for name in hub_files(model_dir):
        shutil.copy2(model_dir / name, published / name)
    run = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(published)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert not loaded["module"].startswith("hf_simplegpt")  # the Hub copy of modeling_simplegpt.py ran
    ids = tiny_tokenizer("The quick brown fox", return_tensors="pt")["input_ids"]
    assert loaded["ids"] == ids[0].tolist()
    with torch.no_grad():
        expected = tiny_model(ids).logits[0, -1, :8].tolist()
    assert loaded["logits"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "model_class, pipeline_tag",
    [
        ("SimpleGPTForMaskedLM", "fill-mask"),
        ("SimpleGPTForSequenceClassification", "text-classification"),
        ("SimpleGPTForCausalLM", "text-generation"),
    ],
)
def test_card_pipeline_tag_follows_the_saved_head(tmp_path, tiny_config, model_class, pipeline_tag):
    import hf_simplegpt

    getattr(hf_simplegpt, model_class)(tiny_config).save_pretrained(tmp_path)
    card = ModelCard.load(write_model_card(tmp_path))
    assert card.data.pipeline_tag == pipeline_tag and pipeline_tag in card.data.tags


def test_a_missing_local_model_folder_is_named_before_the_hub_is_tried(tmp_path, monkeypatch, model_dir):
    from hf_simplegpt.hub import check_model_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    for name in ("outputs/pretrain", "./missing", str(tmp_path / "nope")):
        with pytest.raises(ValueError, match=f"--model_name_or_path {name}: no such folder"):
            check_model_source(name)
    with pytest.raises(ValueError, match="holds no model"):
        check_model_source("outputs")
    check_model_source(str(model_dir))  # a saved model
    check_model_source("openai-community/gpt2")  # looks like a Hub id: left to from_pretrained


@pytest.mark.parametrize("how", ["refused", "offline"])
def test_an_unreachable_hub_is_named_and_the_local_folder_kept(model_dir, monkeypatch, how):
    """No network: one line naming the Hub's host and saying the folder is complete, in seconds, not the HTTP
    client's ConnectError after its retries."""
    from huggingface_hub import constants

    from hf_simplegpt.hub import HubUnreachableError

    if how == "refused":  # a port nothing listens on: the connection is refused, as with no route to the Hub
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(HubUnreachableError) as error:
        push_to_hub(model_dir, "someone/model", token="hf_unused")
    message = str(error.value)
    host = "http://127.0.0.1:9" if how == "refused" else constants.ENDPOINT
    assert f"The Hugging Face Hub at {host} is unreachable" in message and "\n" not in message
    assert f"The local folder {model_dir} is complete" in message and f"hf upload someone/model {model_dir}" in message
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_a_pretraining_run_whose_push_finds_no_hub_keeps_its_model(tmp_path, corpus, monkeypatch):
    from huggingface_hub import constants

    from hf_simplegpt.hub import HubUnreachableError
    from tests.conftest import run_pretrain

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnreachableError, match="is unreachable"):
        run_pretrain(
            tmp_path,
            corpus,
            "--max_steps",
            "2",
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "me/tiny",
            "--report_to",
            "none",
            "--num_sample_generations",
            "0",
        )
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
