"""Export a SimpleGPT to GGUF, llama.cpp's file format (llama.cpp, Ollama, LM Studio, llama-cpp-python), and load
a GGUF back into transformers.

    check_llama_cpp_can_run(model.config)             # ValueError naming what llama.cpp has no graph for
    write_gguf(model, tokenizer, "model.gguf", dtype="f16")
    reloaded = load_gguf("model.gguf")                # transformers' GGUF loader: a GPT2LMHeadModel

A pre-norm SimpleGPT is GPT-2's block, so it is written as llama.cpp's `gpt2` architecture: learned positions
(`position_embd`), LayerNorms with biases, q/k/v fused into one `attn_qkv` projection, a GELU MLP, an optional
untied `output` head. The tokenizer (byte-level BPE, GPT-2's split regex) goes in as its tokens, its merges as
"left right" strings, its special tokens typed CONTROL, and `add_bos_token` false, as SimpleGPT's tokenizer adds no
special tokens when encoding.

What llama.cpp computes differs from SimpleGPT in one place: its GELU is the tanh approximation (GPT-2's, and on CPUs
read from a float16 table). A model trained with `hidden_act="gelu"` (erf, SimpleGPT's default) therefore gets
slightly different logits; `gelu_pytorch_tanh` / `gelu_new` models get the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

GGUF_DTYPES = ("f32", "f16")
# llama.cpp's gpt2 graph applies ggml_gelu, the tanh approximation: these activations are that same function.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")
ERF_GELUS = ("gelu",)
GGUF_FILE = "model.gguf"


def require_gguf():
    """Import gguf (the writer and reader that llama.cpp maintains), or say how to install it."""
    try:
        import gguf
    except ImportError as error:
        raise ImportError("Exporting to GGUF needs the gguf package: pip install 'hf-simplegpt[export]'.") from error
    return gguf


def check_gguf_dtype(dtype: str) -> None:
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"--gguf_dtype {dtype!r} is not offered; choose one of {', '.join(GGUF_DTYPES)}.")


def check_llama_cpp_can_run(config) -> None:
    """ValueError, before any work, for a SimpleGPT (config object or config.json dict) that llama.cpp's `gpt2`
    graph cannot compute, naming the reason and the way out."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    hidden, heads = get("hidden_size"), get("num_attention_heads")
    head_dim = get("head_dim") or hidden // heads
    reasons = []
    if get("norm_position", "post") != "pre":
        reasons.append(
            "it is post-norm (norm_position 'post', the reference design's block: x = norm(x + f(x))); "
            "llama.cpp has no post-norm decoder graph, only GPT-2's pre-norm one. Train with "
            "--norm_position pre (hf-simplegpt pretrain's default) to export"
        )
    if heads * head_dim != hidden:
        reasons.append(
            f"its attention is {heads} heads x {head_dim} = {heads * head_dim} wide, not hidden_size "
            f"{hidden} (pruned heads); llama.cpp's gpt2 graph needs heads x head_dim == hidden_size"
        )
    if get("is_causal", True) is False:
        reasons.append("its attention is bidirectional (a masked LM); llama.cpp's gpt2 graph is a causal decoder")
    act = get("hidden_act", "gelu")
    if act not in TANH_GELUS + ERF_GELUS:
        reasons.append(f"its activation is {act!r}; llama.cpp's gpt2 graph applies GELU only")
    if reasons:
        raise ValueError("llama.cpp cannot run this model: " + "; ".join(reasons) + ".")


def gguf_tokenizer_fields(tokenizer, vocab_size: int) -> dict:
    """The tokenizer as GGUF's `tokenizer.ggml.*` fields for llama.cpp's byte-level BPE ("gpt2" model, "gpt-2"
    pre-tokenizer): tokens by id, their types, merges as "left right" strings. ValueError for a tokenizer llama.cpp
    would split differently."""
    gguf = require_gguf()
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = state.get("pre_tokenizer") or {}
    if state["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise ValueError(
            "GGUF export writes byte-level BPE tokenizers split by GPT-2's regex (what hf_simplegpt "
            f"trains); this tokenizer is {state['model']['type']} with pre-tokenizer {pre.get('type')}."
        )
    if pre.get("add_prefix_space") or state.get("normalizer"):
        raise ValueError(
            "The tokenizer adds a prefix space or normalizes text; llama.cpp's gpt2 tokenizer does "
            "neither, so it would encode text differently."
        )
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_size}.")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    added = set(tokenizer.added_tokens_decoder)
    types = [
        gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL
        for i in range(len(tokens))
    ]
    # Rows of the embedding no token uses (a vocabulary rounded up): named so llama.cpp never emits them as text.
    for i in range(len(tokens), vocab_size):
        tokens.append(f"<|unused_{i}|>")
        types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges}


def gguf_tensors(model, dtype: str) -> dict[str, np.ndarray]:
    """SimpleGPT's weights under llama.cpp's gpt2 tensor names, (out, in) as nn.Linear stores them. q/k/v are
    concatenated into attn_qkv; absent biases (attention_bias / mlp_bias false) are written as zeros, which llama.cpp
    requires. Matrices are `dtype`; vectors (norms, biases) stay float32, as llama.cpp's converter keeps them."""
    config = model.config
    matrix_dtype = np.float16 if dtype == "f16" else np.float32

    def matrix(t):
        return t.detach().float().cpu().numpy().astype(matrix_dtype)

    def vector(t, size):
        return np.zeros(size, np.float32) if t is None else t.detach().float().cpu().numpy()

    base = model.model
    tensors = {
        "token_embd.weight": matrix(base.embed_tokens.weight),
        "position_embd.weight": matrix(base.embed_positions.weight),
        "output_norm.weight": vector(base.norm.weight, None),
        "output_norm.bias": vector(base.norm.bias, None),
    }
    if not config.tie_word_embeddings:  # without `output`, llama.cpp uses token_embd as the head (tied)
        tensors["output.weight"] = matrix(model.lm_head.weight)
    for i, layer in enumerate(base.layers):
        attn, mlp = layer.self_attn, layer.mlp
        qkv_bias = [vector(p.bias, config.hidden_size) for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
        tensors.update(
            {
                f"blk.{i}.attn_norm.weight": vector(layer.attention_norm.weight, None),
                f"blk.{i}.attn_norm.bias": vector(layer.attention_norm.bias, None),
                f"blk.{i}.attn_qkv.weight": matrix(
                    torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                ),
                f"blk.{i}.attn_qkv.bias": np.concatenate(qkv_bias),
                f"blk.{i}.attn_output.weight": matrix(attn.o_proj.weight),
                f"blk.{i}.attn_output.bias": vector(attn.o_proj.bias, config.hidden_size),
                f"blk.{i}.ffn_norm.weight": vector(layer.mlp_norm.weight, None),
                f"blk.{i}.ffn_norm.bias": vector(layer.mlp_norm.bias, None),
                f"blk.{i}.ffn_up.weight": matrix(mlp.up_proj.weight),
                f"blk.{i}.ffn_up.bias": vector(mlp.up_proj.bias, config.intermediate_size),
                f"blk.{i}.ffn_down.weight": matrix(mlp.down_proj.weight),
                f"blk.{i}.ffn_down.bias": vector(mlp.down_proj.bias, config.hidden_size),
            }
        )
    return tensors


def write_gguf(model, tokenizer, path: str | Path, dtype: str = "f16", name: str | None = None) -> Path:
    """Write `model` (a float SimpleGPTForCausalLM that `check_llama_cpp_can_run` accepts) and its `tokenizer` to
    the GGUF file `path`, matrices in `dtype` ("f32" or "f16")."""
    gguf = require_gguf()
    check_gguf_dtype(dtype)
    config = model.config
    check_llama_cpp_can_run(config)
    vocab = gguf_tokenizer_fields(tokenizer, config.vocab_size)
    path = Path(path)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    writer.add_name(name or path.parent.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_layer_norm_eps(config.layer_norm_eps)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # GPT-2's split regex, which ByteLevel(use_regex=True) applies
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    eos = (
        model.generation_config.eos_token_id
        if model.generation_config.eos_token_id is not None
        else config.eos_token_id
    )
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    for add, token_id in (
        (writer.add_bos_token_id, config.bos_token_id),
        (writer.add_eos_token_id, eos),
        (writer.add_pad_token_id, config.pad_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
    ):
        if token_id is not None:
            add(token_id)
    # SimpleGPT's tokenizer adds no special tokens when encoding; llama.cpp would otherwise prepend BOS.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        # {% generation %} marks assistant tokens for TRL's training loss; it is a transformers extension to Jinja
        # that llama.cpp's template engine does not know, and it renders nothing.
        template = tokenizer.chat_template
        writer.add_chat_template(template.replace("{% generation %}", "").replace("{% endgeneration %}", ""))

    for tensor_name, array in gguf_tensors(model, dtype).items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_fields(path: str | Path) -> dict:
    """The scalar metadata of a GGUF file (architecture, context length, sizes, token ids...) by key."""
    gguf = require_gguf()
    reader = gguf.GGUFReader(str(path))
    fields = {}
    for key, field in reader.fields.items():
        if len(field.data) == 1 and field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
            fields[key] = field.contents()
    return fields


def load_gguf(path: str | Path, **kwargs):
    """The causal LM that a GGUF file written by `write_gguf` holds, through transformers' own GGUF loader:
    `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, n_positions=...)`, a GPT2LMHeadModel in float32.

    transformers maps the file's `context_length` to GPT-2's `n_ctx`, not to `n_positions` (the size of `wpe`),
    which stays at GPT-2's 1024 and then fails to load a table of another length: `n_positions` is passed here from
    the file, and so is `n_inner` (the file's `feed_forward_length`, which the loader does not map either)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    fields = gguf_fields(path)
    arch = fields["general.architecture"]
    if arch != "gpt2":
        raise ValueError(f"{path} holds a {arch!r} model; load_gguf reads the gpt2 files that write_gguf writes.")
    kwargs = {
        "n_positions": fields["gpt2.context_length"],
        "n_inner": fields["gpt2.feed_forward_length"],
        "dtype": torch.float32,
        **kwargs,
    }
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)


def load_gguf_tokenizer(path: str | Path):
    """The tokenizer a GGUF file holds, rebuilt by transformers' GGUF loader."""
    from transformers import AutoTokenizer

    path = Path(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


class TransformersLM:
    """A transformers causal LM (the model `load_gguf` returns) behind the `greedy` interface that `greedy_parity`
    compares (the one `hf_simplegpt.export.ExecuTorchLM` has)."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def greedy(self, prompt: list[int], max_new_tokens: int, eos_token_id: int | None = None):
        """(new tokens of greedy `generate`, logits (len(prompt) + len(new) - 1, vocab) of one forward pass)."""
        ids = torch.tensor([prompt])
        new = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id or 0,
        )[0, len(prompt) :].tolist()
        return new, self.model(torch.tensor([prompt + new[:-1]])).logits[0]


def require_llama_cpp():
    """Import llama_cpp (llama-cpp-python), or say how to install it."""
    try:
        import llama_cpp
    except ImportError as error:
        raise ImportError(
            "Running a GGUF here needs llama-cpp-python: pip install llama-cpp-python (it builds "
            "llama.cpp from source where no wheel fits: about 12 minutes on 2 cores)."
        ) from error
    except (OSError, RuntimeError, AttributeError) as error:  # installed, but its llama.cpp library does not load
        raise ImportError(
            f"llama-cpp-python is installed but its llama.cpp library does not load ({error}); "
            "reinstall it: pip install --force-reinstall --no-cache-dir llama-cpp-python."
        ) from error
    return llama_cpp


class LlamaCppLM:
    """A GGUF run by llama.cpp through llama-cpp-python: the prompt in one `eval`, then one `eval` per new token, each
    reading the argmax of llama.cpp's own logits (no sampler in between)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        llama_cpp = require_llama_cpp()
        # n_ctx 0: the model's context (the file's context_length). logits_all: llama-cpp-python 0.3 copies llama.cpp's
        # logits into `scores` only with it (every position's row, which the parity check compares too).
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=0, n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False
        )

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids of `text` (special tokens written in the text are parsed, as transformers does)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def greedy(self, prompt: list[int], max_new_tokens: int, eos_token_id: int | None = None):
        """Greedy decoding after `prompt`, stopping after EOS or at the context's end. Returns (new tokens, logits
        (len(prompt) + len(new) - 1, vocab) of every position llama.cpp computed)."""
        if not prompt:
            raise ValueError("The prompt is empty: greedy decoding needs at least one token.")
        max_new_tokens = min(max_new_tokens, self.llm.n_ctx() - len(prompt))
        if max_new_tokens < 1:
            raise ValueError(
                f"A {len(prompt)}-token prompt leaves no room in the model's {self.llm.n_ctx()}-position context."
            )
        self.llm.reset()
        self.llm.eval(prompt)
        new = [int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))]
        while len(new) < max_new_tokens and new[-1] != eos_token_id:
            self.llm.eval(new[-1:])
            new.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
        return new, torch.from_numpy(self.llm.scores[: self.llm.n_tokens].copy())
