"""Per-request decoding inside transformers' continuous batching.

transformers' continuous batching samples every row of a batch with the settings of the generation config it was
started with. Here each request keeps its own: greedy or sampled, temperature, top_k, top_p, its own seeded
generator, OpenAI's frequency/presence penalties, transformers' repetition penalty, logit_bias, stop strings and
log probabilities, while all requests share the batch. As in vLLM's sampler, the settings become per-row tensors and
one pass processes the whole batch; a row draws its token by the exponential race (argmax of probs / Exp(1) noise,
which is a draw from probs), the noise of a seeded row coming from its own generator, so what a seeded request
draws never depends on which requests share its batch.

`RowSamplingBatchingManager` is transformers' `ContinuousBatchingManager` with its sampling step (`ModelRunner._sample`)
replaced by `RowSampler.sample`; requests register their `Decoding` under their request id before they are added.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from transformers.generation.continuous_batching import ContinuousBatchingManager

# Prompt-cache counters the metrics route reports (see `RowSamplingBatchingManager._create_batch_processor`).
PREFIX_COUNTERS = ("prompts", "prompt_tokens", "cached_prompt_tokens")


@dataclass
class Decoding:
    """How one request is decoded: its GenerationConfig and OpenAI fields, resolved."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # transformers' (over prompt and reply): logits of seen tokens divided by it
    frequency_penalty: float = 0.0  # OpenAI's (over the reply): minus penalty x count
    presence_penalty: float = 0.0  # OpenAI's (over the reply): minus penalty if seen
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    top_logprobs: int | None = None  # None: no log probabilities; k >= 0: the chosen token's and the k best
    tokenizer: object = None  # the Rust tokenizer, to find stop strings in the decoded text

    # Filled while decoding (by the batching thread only).
    generator: torch.Generator | None = None
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    stopped: bool = False
    _decoder: object = None
    _tail: str = ""

    @property
    def penalised(self) -> bool:
        return bool(
            self.repetition_penalty != 1.0 or self.frequency_penalty or self.presence_penalty or self.logit_bias
        )

    def generator_on(self, device) -> torch.Generator | None:
        if self.seed is not None and self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    def sees_stop(self, token: int) -> bool:
        """Whether the reply, with `token` appended, now contains a stop string."""
        if not self.stops:
            return False
        if self._decoder is None:
            from tokenizers.decoders import DecodeStream

            self._decoder = DecodeStream([], skip_special_tokens=True)
        text = self._decoder.step(self.tokenizer, token)
        if text:
            # Keep just enough text to see a stop string that spans tokens.
            self._tail = (self._tail + text)[-(max(map(len, self.stops)) + len(text)) :]
            self.stopped = any(stop in self._tail for stop in self.stops)
        return self.stopped


GREEDY = Decoding()


def penalise(logits: torch.Tensor, decoding: Decoding, prompt: list[int], reply: list[int]) -> None:
    """Apply one row's penalties and logit_bias to its logits [V], in place."""
    if decoding.repetition_penalty != 1.0 and (prompt or reply):
        seen = torch.tensor(prompt + reply, device=logits.device).unique()
        scores = logits[seen]
        penalty = decoding.repetition_penalty
        logits[seen] = torch.where(scores < 0, scores * penalty, scores / penalty)
    if (decoding.frequency_penalty or decoding.presence_penalty) and reply:
        counts = torch.bincount(torch.tensor(reply, device=logits.device), minlength=logits.numel())[: logits.numel()]
        logits -= decoding.frequency_penalty * counts + decoding.presence_penalty * (counts > 0)
    if decoding.logit_bias:
        ids = torch.tensor(list(decoding.logit_bias), device=logits.device)
        logits[ids] += torch.tensor(list(decoding.logit_bias.values()), device=logits.device, dtype=logits.dtype)


def choose_tokens(logits: torch.Tensor, decodings: list[Decoding], histories: list[tuple[list[int], list[int]]]):
    """The next token of each row of `logits` [R, V] (float32), each row decoded by its own `Decoding`.

    Returns (tokens [R], log-softmax of the raw logits [R, V] or None when no row asked for log probabilities)."""
    logprobs = None
    if any(d.top_logprobs is not None for d in decodings):
        logprobs = torch.log_softmax(logits, dim=-1)
    if any(d.penalised for d in decodings):
        logits = logits.clone()
        for row, (decoding, (prompt, reply)) in enumerate(zip(decodings, histories)):
            if decoding.penalised:
                penalise(logits[row], decoding, prompt, reply)
    tokens = logits.argmax(dim=-1)
    sampled = [row for row, d in enumerate(decodings) if d.do_sample]
    if not sampled:
        return tokens, logprobs
    rows = torch.tensor(sampled, device=logits.device)
    chosen = [decodings[row] for row in sampled]
    scores = logits[rows] / torch.tensor([d.temperature for d in chosen], device=logits.device).unsqueeze(-1)
    vocab = scores.size(-1)
    if any(0 < d.top_k < vocab for d in chosen):
        top_k = torch.tensor([d.top_k if 0 < d.top_k < vocab else vocab for d in chosen], device=logits.device)
        kth = scores.sort(dim=-1, descending=True).values.gather(-1, (top_k - 1).unsqueeze(-1))
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if any(d.top_p < 1.0 for d in chosen):
        top_p = torch.tensor([d.top_p for d in chosen], device=logits.device).unsqueeze(-1)
        sorted_scores, order = scores.sort(dim=-1)  # ascending: the tokens to drop come first
        drop = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[:, -1] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), -float("inf"))
    probs = scores.softmax(dim=-1)
    # The exponential race: argmax(p / E) with E ~ Exp(1) i.i.d. draws a token with probability p. Rows with a seed
    # draw E from their own generator, one vector per step, so their draws depend on nothing else in the batch.
    noise = torch.empty_like(probs).exponential_()
    for i, decoding in enumerate(chosen):
        generator = decoding.generator_on(logits.device)
        if generator is not None:
            noise[i].exponential_(generator=generator)
    tokens[rows] = (probs / noise).argmax(dim=-1)
    return tokens, logprobs


class RowSampler:
    """The sampling step of a continuous batch: reads which request each row belongs to from the batch's inputs and
    outputs (the order of `requests_in_batch` that have a new token, which is the order of the logits rows)."""

    def __init__(self):
        self.decodings: dict[str, Decoding] = {}
        self.lock = threading.Lock()

    def register(self, request_id: str, decoding: Decoding) -> None:
        with self.lock:
            self.decodings[request_id] = decoding

    def forget(self, request_id: str) -> None:
        with self.lock:
            self.decodings.pop(request_id, None)

    def sample(self, inputs_and_outputs, scores: torch.Tensor, output_ids: torch.Tensor) -> None:
        """`ModelRunner._sample(scores, output_ids)` for the batch of `inputs_and_outputs`: scores [1, R, V]."""
        states = [future.state for future in inputs_and_outputs.requests_in_batch if future.has_new_token]
        logits = scores[0, : len(states)]
        with self.lock:
            decodings = [self.decodings.get(state.request_id, GREEDY) for state in states]
        histories = [(state.initial_tokens, state.generated_tokens) for state in states]
        tokens, logprobs = choose_tokens(logits, decodings, histories)
        output_ids[0, : len(states)].copy_(tokens)
        token_list = tokens.tolist()
        for row, (state, decoding, token) in enumerate(zip(states, decodings, token_list)):
            if decoding is GREEDY:
                continue
            if decoding.top_logprobs is not None:
                best = []
                if decoding.top_logprobs:
                    values, ids = logprobs[row].topk(decoding.top_logprobs)
                    best = list(zip(ids.tolist(), values.tolist()))
                decoding.logprobs.append((token, logprobs[row, token].item(), best))
            if decoding.sees_stop(token):
                # End the request with this token, as max_new_tokens would: the text after the stop string is cut by
                # the server (StopAtStrings / cut_at_stop), as OpenAI's API does.
                state._new_tokens_limit = min(state._new_tokens_limit, len(state.generated_tokens) + 1)


class RowSamplingBatchingManager(ContinuousBatchingManager):
    """transformers' continuous batching manager, each request decoded by its own `Decoding` (`RowSampler`), and
    prompt-cache hits counted (`prefix_stats`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sampler = RowSampler()
        self.prefix_stats = dict.fromkeys(PREFIX_COUNTERS, 0)

    def _create_batch_processor(self):
        processor = super()._create_batch_processor()
        io = processor.inputs_and_outputs
        processor.model_runner._sample = lambda scores, output_ids: self.sampler.sample(io, scores, output_ids)
        cache, stats = processor.cache, self.prefix_stats
        search = cache.search_prefix_match

        def counted_search(request_id: str, prompt_ids: list[int]) -> int:
            matched = search(request_id, prompt_ids)
            stats["prompts"] += 1
            stats["prompt_tokens"] += len(prompt_ids)
            stats["cached_prompt_tokens"] += matched
            return matched

        cache.search_prefix_match = counted_search
        return processor
