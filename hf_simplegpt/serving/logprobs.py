"""Log probabilities in OpenAI's shapes: `logprobs` / `top_logprobs` on chat completions, `logprobs` (top N) and `echo`
on completions.

What is reported is the model's own distribution: log-softmax of its logits at each position, before temperature,
top-k/top-p, penalties or logit_bias (vLLM's default, `raw_logprobs`; OpenAI does not say). A sampled token's
logprob is then the model's, whatever settings drew it, and a greedy reply's are `log_softmax(model(ids).logits)`.
Generated tokens' entries are recorded by the batch's sampler (`sampling.RowSampler`); an echoed prompt's come from
one forward pass over it (`score_prompt`), the first prompt token having none.

An entry is `(token id, logprob or None, [(id, logprob), ...] best first or None)`, as `sampling.Decoding.logprobs`
holds them. A token's string is the token decoded alone (special tokens included), as vLLM names it; its `bytes` (chat)
are the token's own bytes, as OpenAI sends them, which name it exactly even when it holds part of a character (its
string is then U+FFFD); `text_offset` (completions) counts characters of the strings from the start of the text.
"""

from __future__ import annotations

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

Entry = tuple[int, float | None, list[tuple[int, float]] | None]


@torch.inference_mode()
def score_prompt(model, ids: list[int], top: int) -> list[Entry]:
    """The entries of a prompt's tokens: each token's logprob given the ones before it, and the `top` best there."""
    logits = model(torch.tensor([ids], device=model.device)).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = logprobs.gather(-1, torch.tensor(ids[1:], device=logprobs.device).unsqueeze(-1))[:, 0].tolist()
    entries: list[Entry] = [(ids[0], None, None)]
    if top:
        values, best = logprobs.topk(top, dim=-1)
        pairs = [list(zip(b, v)) for b, v in zip(best.tolist(), values.tolist())]
    else:
        pairs = [[] for _ in chosen]
    entries += [(token, logprob, best) for token, logprob, best in zip(ids[1:], chosen, pairs)]
    return entries


class LogprobShaper:
    """Turns entries into a response's `logprobs`: the chat shape (`{"content": [...]}`) or the completions shape
    (`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`), whole or chunk by chunk in a stream."""

    def __init__(self, route: str, tokenizer, top: int | None):
        self.route, self.tokenizer, self.top = route, tokenizer, top
        self.offset = 0  # completions: characters of token strings already sent
        self.strings: dict[int, str] = {}
        self.bytes_of: dict[int, list[int]] = {}
        byte_level = tokenizer is not None and type(tokenizer.decoder).__name__ == "ByteLevel"
        # GPT-2's byte-level alphabet, reversed: the byte each character of a byte-level BPE token stands for.
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()} if byte_level else None

    def text(self, token: int) -> str:
        if token not in self.strings:
            self.strings[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return self.strings[token]

    def token_bytes(self, token: int) -> list[int]:
        if token not in self.bytes_of:
            piece = self.tokenizer.id_to_token(token) or ""
            if self.byte_decoder is not None and piece and all(c in self.byte_decoder for c in piece):
                self.bytes_of[token] = [self.byte_decoder[c] for c in piece]
            else:  # not a byte-level token (a special token, another tokenizer): its text's bytes
                self.bytes_of[token] = list(self.text(token).encode("utf-8"))
        return self.bytes_of[token]

    def shape(self, entries: list[Entry]) -> dict:
        if self.route == "chat":
            return {"content": [self.chat_entry(token, logprob, best) for token, logprob, best in entries]}
        tokens = [self.text(token) for token, _, _ in entries]
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [logprob for _, logprob, _ in entries],
            "top_logprobs": [self.top_dict(token, logprob, best) for token, logprob, best in entries],
            "text_offset": offsets,
        }

    def chat_entry(self, token: int, logprob: float, best: list[tuple[int, float]]) -> dict:
        def item(token_id, value):
            return {"token": self.text(token_id), "logprob": value, "bytes": self.token_bytes(token_id)}

        return {**item(token, logprob), "top_logprobs": [item(i, v) for i, v in best]}

    def top_dict(self, token: int, logprob: float | None, best) -> dict | None:
        """OpenAI's completions `top_logprobs` entry: the N best and always the chosen token (so up to N+1)."""
        if logprob is None:
            return None
        top: dict[str, float] = {}
        for i, value in [*best, (token, logprob)]:  # two tokens that read alike (U+FFFD): the likelier one
            top.setdefault(self.text(i), value)
        return top
