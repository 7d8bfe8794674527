"""recipes/quantize.py (hf-simplegpt quantize) end to end on a tiny trained model: the quantized folder reloads with a
plain from_pretrained and generates, the table is measured, bad input is refused, and the source folder is never
touched."""

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from torchao.quantization import Int8Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from hf_simplegpt.hub import hub_files
from hf_simplegpt.quantization import compare_on_blocks
from hf_simplegpt.recipes import quantize as recipe
from hf_simplegpt.recipes.quantize import PUBLISHED_EXTRAS
from tests.conftest import folder_digest

FAST = ["--repeats", "1", "--new_tokens", "4", "--batch_size", "4"]


@pytest.fixture(scope="module")
def quantized(trained_tiny_dir, tmp_path_factory):
    """(results, output folder, source digest before) of one int8_dynamic run."""
    before = folder_digest(trained_tiny_dir)
    out = tmp_path_factory.mktemp("quantize") / "int8_dynamic"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(trained_tiny_dir),
            "--method",
            "int8_dynamic",
            "--output_dir",
            str(out),
            "--eval_file",
            str(trained_tiny_dir.parent / "heldout.txt"),
            *FAST,
        ]
    )
    return results, out, before


def test_the_folder_reloads_quantized_with_a_plain_from_pretrained_and_generates(quantized, trained_tiny_dir):
    results, out, _ = quantized
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model.model.layers[0].self_attn.q_proj.weight, Int8Tensor)
    assert isinstance(model.lm_head.weight, Int8Tensor) and isinstance(model.model.embed_tokens.weight, Int8Tensor)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"

    reference = AutoModelForCausalLM.from_pretrained(trained_tiny_dir)
    prompt = AutoTokenizer.from_pretrained(out)("The quick brown", return_tensors="pt")
    greedy = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    new = model.generate(**prompt, **greedy)[0, prompt["input_ids"].shape[1] :]
    assert len(new) == 8 and torch.equal(new, reference.generate(**prompt, **greedy)[0, -8:])  # same greedy tokens

    text = pipeline("text-generation", model=str(out))("The quick brown", max_new_tokens=8, do_sample=False)
    assert text[0]["generated_text"].startswith("The quick brown") and len(text[0]["generated_text"]) > 15


def test_the_table_is_measured_against_the_float_original(quantized, trained_tiny_dir, tiny_tokenizer):
    results, out, _ = quantized
    ref, quant = results["float32"], results["quantized"]
    assert quant["weight_bytes"] <= 0.5 * ref["weight_bytes"] and quant["parameters"] == ref["parameters"]
    assert quant["top1_agreement"] >= 0.95 and 0 < quant["max_logit_diff"] < 0.5

    # The same numbers again, independently, on the held-out blocks the recipe measured.
    text = (trained_tiny_dir.parent / "heldout.txt").read_text().split("\n\n")
    ids = [i for t in text for i in tiny_tokenizer(t.strip(), add_special_tokens=False)["input_ids"] + [2]]
    blocks = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)
    again = compare_on_blocks(
        AutoModelForCausalLM.from_pretrained(trained_tiny_dir), AutoModelForCausalLM.from_pretrained(out), blocks
    )
    assert results["setup"]["tokens"] == again["tokens"] == blocks.numel() - len(blocks)
    assert (ref["loss"], quant["loss"]) == pytest.approx((again["reference_loss"], again["candidate_loss"]))
    assert quant["top1_agreement"] == again["top1_agreement"]
    assert all(v > 0 for k, v in quant.items() if "tokens_per_s" in k) and len(ref) == 7

    table = (out / "quantization.md").read_text()
    assert "| weight bytes |" in table and f"{quant['top1_agreement']:.2%}" in table
    assert json.loads((out / "quantization.json").read_text())["quantized"] == quant
    card = ModelCard.load(out / "README.md")
    assert "int8_dynamic" in card.data.tags and "Int8DynamicActivationInt8WeightConfig" in card.text
    assert "quantization.md" in hub_files(out, PUBLISHED_EXTRAS)  # the folder is ready to publish


def test_bad_input_is_refused_and_the_source_folder_is_never_touched(quantized, trained_tiny_dir, tmp_path):
    _, out, before = quantized
    assert folder_digest(trained_tiny_dir) == before  # after the run
    source = str(trained_tiny_dir)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32}))
    shutil.copy(trained_tiny_dir / "model.safetensors", gpt2)  # a model folder: config and weights
    cases = [
        (["--model_name_or_path", source, "--method", "int3"], "--method 'int3' is not a quantization method"),
        (["--model_name_or_path", str(gpt2), "--method", "int8_dynamic"], "model_type 'gpt2'"),
        (["--model_name_or_path", str(out), "--method", "int8_weight_only"], "already quantized"),
        (["--model_name_or_path", source, "--method", "int8_dynamic", "--output_dir", source], "source model folder"),
        (["--model_name_or_path", source, "--method", "int8_dynamic", "--output_dir", f"{source}/q"], "source model"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model_name_or_path", source, "--method", "int4_weight_only"], "needs a CUDA GPU"))
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            recipe.main(argv)
        assert folder_digest(trained_tiny_dir) == before, argv
    assert not (trained_tiny_dir / "q").exists()
