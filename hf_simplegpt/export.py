"""Export a SimpleGPT to ExecuTorch, the PyTorch runtime for phones and embedded devices, and run the exported program.

    pte = export_executorch(model)                    # bytes of a .pte program, XNNPACK-delegated by default
    runner = ExecuTorchLM("model.pte")                # ExecuTorch's own runtime (executorch.runtime), no transformers
    new_tokens, logits = runner.greedy(prompt_ids, max_new_tokens=20, eos_token_id=2)

The program is transformers' own ExecuTorch recipe, `TorchExportableModuleForDecoderOnlyLM`: the model with a static
KV cache held inside the program as mutable buffers, called as forward(input_ids (1, seq), cache_position (seq,))
-> logits (1, seq, vocab), where cache_position holds the positions of the tokens given. The sequence length is
dynamic (1 .. max_cache_len), so the prompt goes in one call and each new token in one call after it, as
ExecuTorch's LLM runner drives a model. The program also carries the runner's metadata methods (get_max_seq_len,
get_vocab_size, get_bos_id, get_eos_ids, use_kv_cache, enable_dynamic_shape, ...).

Backends: "xnnpack" delegates the matmuls and most other ops to XNNPACK (ARM and x86 CPUs; what phones run);
"portable" keeps ExecuTorch's portable reference kernels (any C++ target, slower, quicker to lower).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

FORMATS = ("executorch", "gguf")
BACKENDS = ("xnnpack", "portable")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(
            f"--format {fmt!r} is not an export format here; choose one of {', '.join(FORMATS)}. (ONNX is not offered: "
            "optimum-onnx 0.1 requires transformers < 4.58, and this project runs on transformers 5.)"
        )


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(
            f"--backend {backend!r} is not an ExecuTorch backend here; choose one of {', '.join(BACKENDS)}."
        )


def require_executorch():
    """Import executorch, or say how to install it."""
    try:
        import executorch  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Exporting to ExecuTorch needs the executorch package: pip install 'hf-simplegpt[export]' "
            "(executorch 1.5, which keeps torch 2.13)."
        ) from error


def runner_metadata(model, max_cache_len: int) -> dict:
    """Constant methods that ExecuTorch's LLM runner reads from a .pte to drive it."""
    config = model.config
    eos = (
        model.generation_config.eos_token_id
        if model.generation_config.eos_token_id is not None
        else config.eos_token_id
    )
    metadata = {
        "get_max_seq_len": max_cache_len,
        "get_max_context_len": max_cache_len,
        "get_vocab_size": config.vocab_size,
        "get_n_layers": config.num_hidden_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,
        "enable_dynamic_shape": True,
    }
    if config.bos_token_id is not None:
        metadata["get_bos_id"] = config.bos_token_id
    if eos is not None:
        metadata["get_eos_ids"] = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return metadata


def export_executorch(model, max_cache_len: int | None = None, backend: str = "xnnpack") -> bytes:
    """The bytes of a .pte program of `model` (a float SimpleGPTForCausalLM) with a static KV cache of
    `max_cache_len` positions (default: the model's context), batch 1, lowered to `backend`."""
    require_executorch()
    check_backend(backend)
    from executorch.exir import to_edge_transform_and_lower
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    context = model.config.max_position_embeddings
    max_cache_len = max_cache_len or context
    if not 2 <= max_cache_len <= context:
        raise ValueError(f"--max_cache_len {max_cache_len} must be in 2..{context} (the model's learned positions).")
    # The recipe requires a static cache and `config.use_cache`, which the Trainer saves as false; both are set for
    # the export only.
    use_cache, generation_config = model.config.use_cache, model.generation_config
    model.config.use_cache = True
    model.generation_config = copy.deepcopy(generation_config)
    model.generation_config.cache_implementation = "static"
    try:
        exportable = TorchExportableModuleForDecoderOnlyLM(model.eval(), batch_size=1, max_cache_len=max_cache_len)
        seq = torch.export.Dim("seq_length", min=1, max=max_cache_len)
        # An example of 2 tokens: torch.export would specialise a dimension of size 1.
        program = exportable.export(
            input_ids=torch.zeros(1, 2, dtype=torch.long),
            cache_position=torch.arange(2),
            dynamic_shapes={"input_ids": {1: seq}, "cache_position": {0: seq}},
            strict=True,
        )
    finally:
        model.config.use_cache, model.generation_config = use_cache, generation_config
    partitioner = []
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioner = [XnnpackPartitioner()]
    lowered = to_edge_transform_and_lower(
        program, partitioner=partitioner, constant_methods=runner_metadata(model, max_cache_len)
    )
    with warnings.catch_warnings():
        # The KV cache buffers are serialized without initial values; ExecuTorch zero-initialises them, and every
        # position is written before attention reads it.
        warnings.filterwarnings("ignore", message="Mutation on a buffer in the model is detected")
        return lowered.to_executorch().buffer


def set_threads(threads: int) -> None:
    """Run torch and ExecuTorch's thread pool (XNNPACK's kernels) on `threads` threads each."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    torch.set_num_threads(threads)
    _unsafe_reset_threadpool(threads)  # "unsafe" while a program runs; nothing runs here


class ExecuTorchLM:
    """A .pte from `export_executorch`, run by ExecuTorch's Python runtime (`executorch.runtime.Runtime`)."""

    def __init__(self, path: str | Path):
        require_executorch()
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(Path(path))
        self.forward_method = program.load_method("forward")
        self.max_seq_len = int(program.load_method("get_max_seq_len").execute([])[0])

    def logits(self, ids: list[int], start: int) -> torch.Tensor:
        """Logits (len(ids), vocab) of tokens `ids` at positions start .. start + len(ids) - 1; the cache then holds
        them (and still holds positions before `start` from earlier calls)."""
        if start + len(ids) > self.max_seq_len:
            raise ValueError(f"Positions up to {start + len(ids)} exceed the program's cache of {self.max_seq_len}.")
        inputs = [torch.tensor([ids], dtype=torch.long), torch.arange(start, start + len(ids))]
        return self.forward_method.execute(inputs)[0][0]

    def greedy(self, prompt: list[int], max_new_tokens: int, eos_token_id: int | None = None):
        """Greedy decoding after `prompt`, stopping after EOS or at the cache's end: the prompt in one call, then one
        call per new token. Returns (new tokens, logits (len(prompt) + len(new) - 1, vocab) of every position the
        program computed)."""
        if not prompt:
            raise ValueError("The prompt is empty: greedy decoding needs at least one token.")
        max_new_tokens = min(max_new_tokens, self.max_seq_len - len(prompt))
        if max_new_tokens < 1:
            raise ValueError(
                f"A {len(prompt)}-token prompt leaves no room in the program's {self.max_seq_len}-position "
                "cache; shorten it or export with a larger --max_cache_len."
            )
        logits = [self.logits(prompt, 0)]
        new = [int(logits[-1][-1].argmax())]
        while len(new) < max_new_tokens and new[-1] != eos_token_id:
            logits.append(self.logits(new[-1:], len(prompt) + len(new) - 1))
            new.append(int(logits[-1][-1].argmax()))
        return new, torch.cat(logits)


@torch.no_grad()
def greedy_parity(model, runner, prompts: list[list[int]], max_new_tokens: int, name: str = "executorch") -> list[dict]:
    """Per prompt (token ids): transformers' greedy `generate` and the runner's greedy tokens (under `name`), whether
    they are equal, and the largest |logit difference| over every position the runner computed, against one eager
    forward pass over the prompt and the runner's new tokens. `runner` is an `ExecuTorchLM`, or anything with its
    `greedy(prompt, max_new_tokens, eos_token_id) -> (new tokens, logits)` (hf_simplegpt.gguf's runners)."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None else eos
    rows = []
    for ids in prompts:
        prompt = torch.tensor([ids])
        expected = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )[0, len(ids) :].tolist()
        got, logits = runner.greedy(ids, max_new_tokens, eos)
        eager = model(torch.tensor([ids + got[:-1]])).logits[0]
        rows.append(
            {
                "prompt_ids": ids,
                "generate": expected,
                name: got,
                "match": expected == got,
                "max_logit_diff": (logits - eager).abs().max().item(),
            }
        )
    return rows


def llm_runner_text(pte: str | Path, tokenizer_file: str | Path, prompt: str, max_new_tokens: int) -> str:
    """The greedy continuation of `prompt` by ExecuTorch's C++ LLM runner (`TextLLMRunner`, what its Android and iOS
    apps run), from the .pte and a tokenizer.json: the text of its token callbacks."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    pieces: list[str] = []
    config = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0)
    TextLLMRunner(str(pte), str(tokenizer_file)).generate(prompt, config, token_callback=pieces.append)
    return "".join(pieces)
