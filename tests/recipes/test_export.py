"""recipes/export.py (hf-simplegpt export) end to end on a tiny trained model: the .pte decodes exactly as `generate`
on ExecuTorch's Python runtime and its C++ LLM runner, the GGUF reloads with the same greedy tokens (and runs in
llama.cpp where llama-cpp-python is installed), bad input is refused, and the source folder is never touched.
The library sides, hf_simplegpt/export.py and hf_simplegpt/gguf.py, are tested in tests/test_export.py and
tests/test_gguf.py.

The export uses ExecuTorch's portable kernels: lowering to XNNPACK (the default) takes 4x as long, and its parity
on the default pretrained model is the documented run in benchmarks/README.md."""

import json
import shutil

import pytest

from hf_simplegpt.recipes import export as recipe
from tests.conftest import folder_digest, train_tiny


@pytest.fixture(scope="module")
def exported(trained_tiny_dir, tmp_path_factory):
    """(results, output folder, source digest before) of one export."""
    before = folder_digest(trained_tiny_dir)
    out = tmp_path_factory.mktemp("export") / "executorch"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(trained_tiny_dir),
            "--format",
            "executorch",
            "--output_dir",
            str(out),
            "--backend",
            "portable",
            "--prompts",
            "The quick brown",
            "To be",
            "Numbers like",
            "--max_new_tokens",
            "12",
            "--repeats",
            "1",
        ]
    )
    return results, out, before


def test_the_program_decodes_as_generate_on_both_executorch_runtimes(exported):
    results, out, _ = exported
    assert {"model.pte", "tokenizer.json", "export.json", "export.md"} <= {p.name for p in out.iterdir()}
    assert [row["prompt"] for row in results["parity"]] == ["The quick brown", "To be", "Numbers like"]
    for row in results["parity"]:
        assert row["executorch"] == row["generate"] and len(row["generate"]) == 12 and row["match"]
        assert row["max_logit_diff"] < 1e-4  # every position's logits, not only the argmax
        assert row["runner_match"] and row["runner_text"].strip()
    assert len(set(tuple(row["generate"]) for row in results["parity"])) == 3  # three different continuations
    assert json.loads((out / "export.json").read_text())["parity"] == results["parity"]
    assert (out / "export.md").read_text().count("| yes | ") == 3


def test_bad_input_is_refused_and_the_source_folder_is_never_touched(exported, trained_tiny_dir, tmp_path):
    _, _, before = exported
    assert folder_digest(trained_tiny_dir) == before  # after the run
    config = json.loads((trained_tiny_dir / "config.json").read_text())
    folders = {}
    for name, extra in (
        ("gpt2", {"model_type": "gpt2"}),
        ("int8", {"quantization_config": {"quant_method": "torchao"}}),
    ):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "config.json").write_text(json.dumps({**config, **extra}))
        shutil.copy(trained_tiny_dir / "model.safetensors", folders[name])  # a model folder: config and weights
    source = str(trained_tiny_dir)
    cases = [
        (["--model_name_or_path", source, "--format", "onnx"], "--format 'onnx' is not an export format"),
        (["--model_name_or_path", source, "--backend", "coreml"], "--backend 'coreml' is not an ExecuTorch backend"),
        (["--model_name_or_path", str(folders["gpt2"])], "model_type 'gpt2'"),
        (["--model_name_or_path", str(folders["int8"])], "already quantized"),
        (["--model_name_or_path", source, "--output_dir", source], "source model folder"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            recipe.main(argv)
        assert folder_digest(trained_tiny_dir) == before, argv


@pytest.fixture(scope="module")
def prenorm_dir(tiny_tokenizer, tiny_corpus, tmp_path_factory):
    """A saved tiny pre-norm SimpleGPT (llama.cpp's gpt2 block) with SimpleGPT's default erf-GELU."""
    folder = tmp_path_factory.mktemp("prenorm") / "model"
    train_tiny(tiny_tokenizer, tiny_corpus, norm_position="pre").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_the_gguf_reloads_with_the_same_greedy_tokens_and_reports_its_differences(prenorm_dir, tmp_path):
    before = folder_digest(prenorm_dir)
    out = tmp_path / "gguf"
    results = recipe.main(
        [
            "--model_name_or_path",
            str(prenorm_dir),
            "--format",
            "gguf",
            "--output_dir",
            str(out),
            "--prompts",
            "The quick brown",
            "All that",
            "--max_new_tokens",
            "12",
            "--repeats",
            "1",
        ]
    )
    assert {p.name for p in out.iterdir()} >= {"model.gguf", "export.json", "export.md"}
    assert results["gguf_dtype"] == "f16" and results["hidden_act"] == "gelu" and not results["exact"]
    for row in results["parity"]:
        assert row["tokenizer_match"] and row["match"] and row["transformers_gguf"] == row["generate"]
        assert 1e-4 < row["max_logit_diff"] < 1e-2  # f16 weights and tanh-GELU for erf: measured, not exact
        if results["llama_cpp_version"]:
            assert row["llama_cpp_match"]
    assert max(len(row["generate"]) for row in results["parity"]) == 12  # one stops at EOS, one runs to the limit
    report = (out / "export.md").read_text()
    assert "The model's activation is 'gelu' (erf)" in report and report.count("| yes | yes |") == 2
    assert folder_digest(prenorm_dir) == before
    with pytest.raises(ValueError, match="already holds a model or checkpoints \\(model.gguf\\)"):
        recipe.main(["--model_name_or_path", str(prenorm_dir), "--format", "gguf", "--output_dir", str(out)])


def test_gguf_refuses_what_llama_cpp_cannot_run_and_flags_of_the_other_format(trained_tiny_dir, prenorm_dir, tmp_path):
    out = str(tmp_path / "out")
    cases = [
        ([str(trained_tiny_dir), "--format", "gguf"], "llama.cpp has no post-norm decoder graph"),
        ([str(prenorm_dir), "--format", "gguf", "--backend", "portable"], "--backend does not apply to --format gguf"),
        ([str(prenorm_dir), "--format", "gguf", "--max_cache_len", "8"], "--max_cache_len does not apply"),
        ([str(prenorm_dir), "--format", "executorch", "--gguf_dtype", "f32"], "--gguf_dtype does not apply"),
        ([str(prenorm_dir), "--format", "gguf", "--gguf_dtype", "q4_0"], "--gguf_dtype 'q4_0' is not offered"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            recipe.main(["--model_name_or_path", *argv, "--output_dir", out])
    assert not (tmp_path / "out").exists()  # refused before the output folder was claimed
