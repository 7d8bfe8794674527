"""Log-likelihood of continuations given contexts, computed the way lm-evaluation-harness does.

A request is a pair of strings (context, continuation). Its score is the summed log-probability of the
continuation tokens after the context tokens, where

* trailing whitespace of the context moves to the front of the continuation (so "Answer: " + "A" is
  scored as "Answer:" + " A", the tokenisation the model saw in training);
* continuation tokens = tokens(context + continuation) beyond the first len(tokens(context)) tokens;
* no special tokens are added; an empty context is replaced by one BOS (or EOS) token;
* when context + continuation is longer than the model's window, the context is cut from the left.

Requests whose model inputs are identical (e.g. the four single-token answers " A".." D" of one MMLU
question) share one forward pass: each forward row carries every continuation scored on it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)


def encode_pairs(tokenizer, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each (context, continuation), split the lm-evaluation-harness way (see module docstring).

    Texts are tokenised in batched calls and each distinct context once (MMLU's four choices share one).
    """
    split = []
    for context, continuation in requests:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        split.append((context, continuation))
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None and any(not context for context, _ in split):
        raise ValueError("Empty context and the tokenizer has neither a BOS nor an EOS token to stand in for it.")
    contexts = list(dict.fromkeys(context for context, _ in split if context))

    def encode(texts):  # verbose=False: contexts longer than the model are expected; they are cut from the left
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    context_ids = dict(zip(contexts, encode(contexts)))
    wholes = encode([context + continuation for context, continuation in split])
    pairs = []
    for (context, continuation), whole in zip(split, wholes):
        if context:
            ctx = context_ids[context]
            cont = whole[len(ctx) :]
        else:
            ctx, cont = [prefix], whole
        if not cont:
            raise ValueError(
                f"Continuation {continuation!r} after context ending {context[-40:]!r} has no tokens of its own; "
                "give a non-empty continuation."
            )
        pairs.append((ctx, cont))
    return pairs


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """`encode_pairs` for one request."""
    return encode_pairs(tokenizer, [(context, continuation)])[0]


def model_max_length(model) -> int:
    """Longest input the model accepts: config.max_position_embeddings (or n_positions for GPT-2 style configs)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"Cannot tell the context length of {type(model).__name__}; pass max_length explicitly.")


@dataclass
class _Row:
    """One forward pass input and the continuations scored on its last positions."""

    input_ids: list[int]
    continuations: list[list[int]] = field(default_factory=list)
    request_ids: list[int] = field(default_factory=list)


def _build_rows(pairs: Sequence[tuple[list[int], list[int]]], max_length: int, share: bool) -> list[_Row]:
    """Model input of each request, (context + continuation)[-(max_length+1):][:-1], grouped when identical."""
    rows: list[_Row] = []
    by_input: dict[tuple[int, ...], _Row] = {}
    for request_id, (context_ids, continuation_ids) in enumerate(pairs):
        if len(continuation_ids) > max_length:
            raise ValueError(
                f"Continuation of {len(continuation_ids)} tokens exceeds the model window of {max_length} tokens."
            )
        input_ids = (context_ids + continuation_ids)[-(max_length + 1) :][:-1]
        key = tuple(input_ids)
        row = by_input.get(key) if share else None
        if row is None:
            row = _Row(input_ids)
            rows.append(row)
            if share:
                by_input[key] = row
        row.continuations.append(continuation_ids)
        row.request_ids.append(request_id)
    return rows


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@torch.no_grad()
def score_token_pairs(
    model,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    padding_side: str = "left",
    pad_token_id: int = 0,
    share_inputs: bool = True,
    on_rows_done: Callable[[int], None] | None = None,
) -> list[float]:
    """Summed log-probability of each continuation given its context.

    Args:
        pairs: (context_ids, continuation_ids) per request, e.g. from `encode_pairs`.
        batch_size: forward rows per batch (rows are sorted longest first to waste little padding).
        padding_side: "left" (rows end together, so only the last positions go through the LM head when the
            model takes `logits_to_keep`) or "right". Both give the unpadded scores: pad positions are masked
            and position ids count real tokens only.
        share_inputs: score requests with identical model input in one forward row (one pass per MMLU
            question when all four answers are single tokens); False runs one row per request.
        on_rows_done: called with the number of forward rows finished after each batch (progress bars).
    Returns:
        one float per request, in request order.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    max_length = max_length or model_max_length(model)
    cut = sum(len(context) + len(continuation) > max_length + 1 for context, continuation in pairs)
    if cut:
        logger.warning(
            "%d of %d scored requests are longer than the model's %d-token context: their contexts are cut "
            "from the left (as lm-evaluation-harness does), so they are scored on part of their prompt.",
            cut,
            len(pairs),
            max_length,
        )
    rows = _build_rows(pairs, max_length, share_inputs)
    rows.sort(key=lambda r: -len(r.input_ids))
    device = next(model.parameters()).device
    takes_positions = _accepts(model, "position_ids")
    takes_keep = padding_side == "left" and _accepts(model, "logits_to_keep")
    if padding_side == "left" and not takes_positions:
        raise ValueError(
            f"{type(model).__name__}.forward takes no position_ids, so left padding would shift positions; "
            "use padding_side='right'."
        )
    scores = [0.0] * len(pairs)
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = len(batch[0].input_ids)
        input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            n = len(row.input_ids)
            cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
            input_ids[i, cols] = torch.tensor(row.input_ids)
            mask[i, cols] = 1
        kwargs = {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}
        if takes_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
        # With left padding every row ends at column `width`, so the LM head only needs the last
        # `keep` positions: for small models the vocabulary projection dominates the cost.
        keep = max(len(c) for row in batch for c in row.continuations)
        if takes_keep:
            kwargs["logits_to_keep"] = keep
        logits = model(**kwargs).logits.float()  # (batch, width or keep, vocab)
        offset = width - logits.shape[1]
        for i, row in enumerate(batch):
            end = width if padding_side == "left" else len(row.input_ids)  # one past the last real column
            for request_id, continuation in zip(row.request_ids, row.continuations):
                c = len(continuation)
                # column j predicts the token at column j + 1, so the continuation is predicted by the
                # last c columns of the input
                step_logits = logits[i, end - c - offset : end - offset]  # (c, vocab)
                logprobs = torch.log_softmax(step_logits, dim=-1)
                target = torch.tensor(continuation, device=logprobs.device)
                scores[request_id] = logprobs.gather(-1, target[:, None]).sum().item()
        if on_rows_done is not None:
            on_rows_done(len(batch))
    return scores


def count_rows(pairs: Sequence[tuple[list[int], list[int]]], max_length: int, share_inputs: bool = True) -> int:
    """Number of forward rows `score_token_pairs` will run for `pairs` (to size a progress bar)."""
    return len(_build_rows(pairs, max_length, share_inputs))
