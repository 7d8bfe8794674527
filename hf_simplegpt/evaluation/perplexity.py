"""Perplexity of a causal LM on texts, with a sliding window for texts longer than the model's context.

Each text is tokenised on its own (a BOS token is prepended when the tokenizer has one, so the first
word is scored too). A window of `max_length` tokens slides by `stride`; each token is scored once, by
the first window that holds it after the window's first token, with the window's earlier tokens as
context, so stride < max_length gives every scored token at least max_length - stride tokens of context.
With stride == max_length (no overlap) the first token of each window has no context and is not scored;
`num_tokens` counts the tokens actually scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .loglikelihood import model_max_length


def _windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored index) per window; tokens first..end-1 are scored, each exactly once."""
    windows, scored_until = [], 1  # token 0 has no left context
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        first = max(scored_until, begin + 1)
        if first < end:
            windows.append((begin, end, first))
        scored_until = end
        if end == n_tokens:
            break
    return windows


@torch.no_grad()
def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    stride: int | None = None,
    max_length: int | None = None,
    batch_size: int = 8,
    add_bos: bool = True,
) -> dict:
    """Perplexity per text and over all tokens of `texts`.

    Args:
        stride: window step in tokens (default max_length // 2).
        max_length: window length (default: the model's context length).
        add_bos: prepend the tokenizer's BOS token (when it has one) so each text's first token is scored.
    Returns:
        {"perplexities": [one per text], "mean_perplexity": mean of those,
         "perplexity": exp(total NLL / total scored tokens), "num_tokens": total scored tokens}
    """
    max_length = max_length or model_max_length(model)
    stride = stride or max(1, max_length // 2)
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length={max_length}, got {stride}.")
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string.")
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    encoded = []
    for i, text in enumerate(texts):
        ids = bos + tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) < 2:
            raise ValueError(
                f"Text {i} ({text[:40]!r}) has {len(ids)} token(s) after tokenisation (BOS included); "
                "perplexity needs at least one token to predict. Drop empty texts."
            )
        encoded.append(ids)
    if not encoded:
        raise ValueError("No texts given; perplexity needs at least one non-empty text.")

    jobs = [(t, w) for t, ids in enumerate(encoded) for w in _windows(len(ids), max_length, stride)]
    jobs.sort(key=lambda job: -(job[1][1] - job[1][0]))  # long windows together: little padding
    nll = [0.0] * len(encoded)
    count = [0] * len(encoded)
    device = next(model.parameters()).device
    model.eval()
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        width = max(end - begin for _, (begin, end, _) in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (t, (begin, end, _)) in enumerate(batch):  # right padding: real tokens keep positions 0..n-1
            input_ids[i, : end - begin] = torch.tensor(encoded[t][begin:end])
            mask[i, : end - begin] = 1
        logprobs = torch.log_softmax(
            model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float(), dim=-1
        )  # (batch, width, vocab)
        for i, (t, (begin, end, first)) in enumerate(batch):
            targets = torch.tensor(encoded[t][first:end], device=logprobs.device)
            # column j predicts token begin + j + 1
            predicted_by = logprobs[i, first - begin - 1 : end - begin - 1]
            nll[t] -= predicted_by.gather(-1, targets[:, None]).sum().item()
            count[t] += end - first
    per_text = [math.exp(n / c) for n, c in zip(nll, count)]
    return {
        "perplexities": per_text,
        "mean_perplexity": sum(per_text) / len(per_text),
        "perplexity": math.exp(sum(nll) / sum(count)),
        "num_tokens": sum(count),
    }
