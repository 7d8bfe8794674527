"""Greedy completions for generation metrics such as BLEU."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def generate_completions(
    model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 64, batch_size: int = 8
) -> list[str]:
    """Greedy continuation of each prompt (the new text only, stripped, cut at the first newline).

    Prompts are left-padded so every row's continuation starts at the same column.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no pad token; set tokenizer.pad_token before batched generation.")
    device = next(model.parameters()).device
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        outputs = []
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)  # fmt: skip
            generated = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )  # (batch, prompt width + new tokens)
            new = generated[:, batch["input_ids"].shape[1] :]
            outputs += [t.strip().split("\n")[0].strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return outputs
    finally:
        tokenizer.padding_side = side
