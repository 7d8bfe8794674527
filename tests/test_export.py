"""hf_simplegpt/export.py: the ExecuTorch program of a tiny random SimpleGPT, run by ExecuTorch's Python runtime
through `ExecuTorchLM`, prefills and decodes exactly as transformers' `generate`, carries the LLM runner's metadata,
and leaves the model it exported as it was. The recipe (hf-simplegpt export) is tested in tests/recipes/test_export.py.

The export uses ExecuTorch's portable kernels, which lower 4x faster than XNNPACK."""

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.export import (
    ExecuTorchLM,
    check_backend,
    check_format,
    export_executorch,
    greedy_parity,
)
from tests.conftest import tiny_config_kwargs

CACHE = 24  # fewer positions than the model's 64, so the program's own limit is what the errors name


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(eos_token_id=2, bos_token_id=1))).eval()


@pytest.fixture(scope="module")
def pte(model, tmp_path_factory):
    config_before, generation_before = model.config.to_dict(), model.generation_config.to_dict()
    pte = tmp_path_factory.mktemp("export") / "model.pte"
    pte.write_bytes(export_executorch(model, max_cache_len=CACHE, backend="portable"))
    # The export sets a static cache and use_cache on the model for its own run only.
    assert model.config.to_dict() == config_before and model.generation_config.to_dict() == generation_before
    return pte


@pytest.fixture(scope="module")
def runner(pte):
    return ExecuTorchLM(pte)


def test_the_program_prefills_then_decodes_one_token_per_call_as_generate_does(model, runner):
    assert runner.max_seq_len == CACHE
    prompt = [5, 17, 42, 8]
    new, logits = runner.greedy(prompt, 12)  # no EOS given: exactly 12 tokens
    expected = model.generate(
        torch.tensor([prompt]), max_new_tokens=12, min_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert new == expected and len(set(new)) > 1
    with torch.no_grad():
        eager = model(torch.tensor([prompt + new[:-1]])).logits[0]
    assert logits.shape == eager.shape == (len(prompt) + 11, 300)
    torch.testing.assert_close(logits, eager, atol=1e-5, rtol=1e-5)


def test_decoding_stops_at_eos_and_at_the_end_of_the_cache(model, runner):
    prompt = [5, 17, 42, 8]
    free, _ = runner.greedy(prompt, 12)
    eos = free[3]  # pretend the 4th new token is EOS: decoding stops right after it
    assert runner.greedy(prompt, 12, eos_token_id=eos)[0] == free[: free.index(eos) + 1]
    long_prompt = list(range(3, 3 + CACHE - 2))
    assert len(runner.greedy(long_prompt, 10)[0]) == 2  # only 2 positions left in the cache


def test_greedy_parity_reports_equal_tokens_and_tiny_logit_differences(model, runner):
    rows = greedy_parity(model, runner, [[5, 17], [9, 9, 9, 30, 2]], max_new_tokens=6)
    assert [row["match"] for row in rows] == [True, True]
    assert all(row["generate"] == row["executorch"] for row in rows)
    assert all(row["max_logit_diff"] < 1e-5 for row in rows)


def test_the_program_carries_the_llm_runners_metadata(pte):
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(pte)
    read = {
        name: program.load_method(name).execute([])[0]
        for name in ("get_vocab_size", "get_n_layers", "get_bos_id", "get_max_context_len", "use_kv_cache")
    }
    assert read == {
        "get_vocab_size": 300,
        "get_n_layers": 2,
        "get_bos_id": 1,
        "get_max_context_len": CACHE,
        "use_kv_cache": True,
    }


def test_bad_requests_name_the_problem(model, runner):
    with pytest.raises(ValueError, match="leaves no room"):
        runner.greedy(list(range(3, 3 + CACHE)), 1)
    with pytest.raises(ValueError, match="prompt is empty"):
        runner.greedy([], 1)
    with pytest.raises(ValueError, match=f"exceed the program's cache of {CACHE}"):
        runner.logits([5, 6], CACHE - 1)
    with pytest.raises(ValueError, match="--max_cache_len 65 must be in 2..64"):
        export_executorch(model, max_cache_len=65, backend="portable")
    with pytest.raises(ValueError, match="--format 'onnx' is not an export format"):
        check_format("onnx")
    with pytest.raises(ValueError, match="--backend 'coreml' is not an ExecuTorch backend"):
        check_backend("coreml")
