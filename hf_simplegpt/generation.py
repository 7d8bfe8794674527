"""One way to generate text for every job: sample continuations after pretraining and fine-tuning, completions for
the alignment measurements, greedy answers for BLEU.

Prompts are plain strings (tokenized without special tokens) or chat messages (rendered with the tokenizer's chat
template up to the assistant turn), generated in left-padded batches with `model.generate`. A model with learned
positions cannot go past its context: prompts longer than it keep their last tokens, and new tokens are capped at
what the context leaves, each said once in the log rather than failing at the end of a long run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]

# The decoding a pretrained folder's generation_config.json asks for, used by `generate`, `pipeline`, `hf-simplegpt
# serve` and its chat page whenever a call sets nothing else: sampling, as language models on the Hub ship (Llama 3:
# temperature 0.6, top_p 0.9; Qwen2.5: 0.7, 0.8, top_k 20). A small model's greedy continuation is often a loop of
# newlines; a moderate temperature with top-k and nucleus cut-offs gives readable text without the tail's noise.
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_k": 50, "top_p": 0.95}


def set_sampling_defaults(model) -> None:
    """Give `model.generation_config` the `SAMPLING_DEFAULTS` (saved with the model as generation_config.json); a model
    that does not generate (the masked LM) has none to set."""
    if getattr(model, "generation_config", None) is None:
        return
    for name, value in SAMPLING_DEFAULTS.items():
        setattr(model.generation_config, name, value)


def context_length(model) -> int | None:
    """The number of positions a model (or its config) can attend over (`max_position_embeddings`), or None when
    unbounded."""
    config = getattr(model, "config", model)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_fits_context(model, length: int | None, flag: str) -> None:
    """Raise ValueError before any work when a length flag (`--max_length`) exceeds the model's context: the
    trainer would otherwise fail at the first sequence that long, deep into training."""
    limit = context_length(model)
    if length is not None and limit is not None and length > limit:
        raise ValueError(
            f"{flag} {length} is longer than the model's {limit} learned positions; pass {flag} {limit} (or less)."
        )


def keep_last_tokens(sequences: list[list[int]], limit: int | None, what: str) -> list[list[int]]:
    """`sequences` cut to their last `limit` tokens, with one warning counting the ones cut (no-op for None)."""
    if limit is None:
        return sequences
    too_long = sum(len(ids) > limit for ids in sequences)
    if too_long:
        logger.warning(
            "%d of %d %s have more than the %d tokens the model's context allows: they keep only their last %d tokens.",
            too_long,
            len(sequences),
            what,
            limit,
            limit,
        )
    return [ids[-limit:] for ids in sequences]


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a plain prompt (no special tokens added) or of a chat prompt up to the assistant header."""
    if isinstance(prompt, list):
        encoded = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def fit_to_context(prompts: list[list[int]], max_new_tokens: int, limit: int | None) -> tuple[list[list[int]], int]:
    """(prompts, new tokens) that fit `limit` positions: prompts keep their last `limit - 1` tokens, and the new
    tokens are capped at what the longest prompt leaves. Each change is logged once."""
    if limit is None:
        return prompts, max_new_tokens
    prompts = keep_last_tokens(prompts, limit - 1, "prompts")
    room = limit - max(len(ids) for ids in prompts)
    if max_new_tokens > room:
        logger.warning(
            "max_new_tokens=%d is more than the model's %d-position context leaves after the longest "
            "prompt (%d tokens): generating at most %d new tokens.",
            max_new_tokens,
            limit,
            limit - room,
            room,
        )
        max_new_tokens = room
    return prompts, max_new_tokens


@torch.no_grad()
def fixed_length_greedy(ids: torch.Tensor, new_tokens: int) -> dict:
    """`generate` kwargs for exactly `new_tokens` greedy tokens after every row of `ids` (rows of one length): no
    EOS stop and no padding, so that timed runs always do the same work."""
    return dict(
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )


def generate(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 8,
) -> list[str]:
    """The new text generated after each prompt (special tokens dropped), greedy or sampled.

    Args:
        prompts: plain strings, or chat conversations (lists of {"role", "content"}) to answer.
        do_sample, temperature, top_k, top_p: sampling settings (`top_k=0` samples from the full distribution);
            greedy decoding without `do_sample`.
        seed: makes sampling reproducible without touching the caller's random state.
        batch_size: prompts generated together (left-padded).
    """
    if not prompts:
        return []
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    ids, max_new_tokens = fit_to_context(
        [encode_prompt(tokenizer, p) for p in prompts], max_new_tokens, context_length(model)
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # GPT-2's tokenizer has no pad token: pad (masked out) with EOS, as `generate` does, on a copy of it.
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p} if do_sample else {}
    was_training = model.training
    model.eval()
    texts = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(ids), batch_size):
            # Left padding puts every prompt's last token in the last column, where generation continues.
            batch = tokenizer.pad(
                {"input_ids": ids[start : start + batch_size]}, padding_side="left", return_tensors="pt"
            ).to(device)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                do_sample=do_sample,
                **sampling,
            )
            texts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    model.train(was_training)
    return texts
