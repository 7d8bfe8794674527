"""The OpenAI-compatible app: transformers' own serving app (`transformers serve`), configured for SimpleGPT folders.

`build_app(model_dir)` returns the FastAPI app that `transformers serve MODEL --continuous-batching` builds, from the
same parts (`ModelManager`, `GenerationState`, the request handlers, `build_server`), with these changes, each made by
subclassing or wrapping a part (the parts it relies on are pinned by tests/serving/test_contract.py):

1. SimpleGPT loads: transformers' model manager resolves the class as `getattr(transformers, architectures[0])`, so
   `register_simplegpt()` puts the SimpleGPT classes on the module object it reads.
2. A LoRA/DoRA adapter folder is served too: its base model is loaded the way transformers loads any model, and the
   adapter is merged into it with PEFT (`merge_and_unload`), so decoding costs what the base costs.
3. Every request is checked before any work (`checks.check_request`): a malformed field, an unsupported OpenAI field
   or a request over a limit is a 4xx naming it, in OpenAI's error shape (`openai_errors`).
4. Safe by default (`guard`): the folder it was started with, and nothing else, is served (transformers'
   `/load_model` and `/reset` exist only under `--allow_model_dir DIR`, for folders under DIR); `--api_key` is
   required on every route but /health; bodies are capped in size and in the time they take to arrive.
5. Every request stays inside the model's context: a prompt that fills it is refused with a 400; `max_tokens`
   (default: the rest of the context) is capped at what the context leaves, and the reply then ends with "length".
6. Every request is decoded in the continuous batch with its own settings (absent ones: the folder's
   generation_config) (`sampling.RowSamplingBatchingManager`):
   greedy or sampled, temperature, top_k, top_p, seed, stop strings, penalties, logit_bias, max_tokens.
7. Replies read as in OpenAI's API: the text ends before a stop string, a whole reply is decoded as its stream is
   (streamed and non-streamed text are equal), and `usage` is streamed only when `stream_options.include_usage`
   asks for it, in a final chunk of its own with `choices: []`.
8. `logprobs` / `top_logprobs` (chat) and `logprobs` + `echo` (completions) in OpenAI's shapes (`logprobs.py`): the
   batch's sampler records the generated tokens' logprobs, an echoed prompt is scored by a forward pass of its own.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import math
import os
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch

import hf_simplegpt
from hf_simplegpt.generation import context_length
from hf_simplegpt.hub import check_model_source
from hf_simplegpt.serving.checks import Limits, RequestError, check_request, token_prompt
from hf_simplegpt.serving.logprobs import LogprobShaper, score_prompt

# The body of the request being handled, seen by the generation state and managers that serve it (they are called
# from the handler's own task, so each request sees its own body), and what they learn while setting it up.
CURRENT_REQUEST: ContextVar[dict | None] = ContextVar("hf_simplegpt_current_request", default=None)
CURRENT_REPLY: ContextVar[Reply | None] = ContextVar("hf_simplegpt_current_reply", default=None)

# Seconds a client may take to send its request body; SIGTERM waits at most GRACEFUL_SHUTDOWN_S for requests in flight.
BODY_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 5


@dataclass
class Reply:
    """What a request's handler and manager learn while setting it up, to shape its response: the `Decoding` that
    records its tokens' logprobs, and the echoed prompt of a completion (`echo`) with its logprobs."""

    tokenizer: object = None  # the Rust tokenizer, to name tokens
    decoding: object = None  # sampling.Decoding
    echo_text: str | None = None
    echo_entries: list | None = None

    @property
    def generated(self) -> list:
        """The logprob entries of the tokens generated so far."""
        return self.decoding.logprobs if self.decoding is not None else []


@dataclass
class ServeOptions:
    """How the app loads, decodes and guards; the `hf-simplegpt serve` flags of the same names."""

    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    continuous_batching: bool = True
    cb_num_blocks: int | None = None  # unset on a CPU: room for CPU_CONCURRENT_SEQUENCES full-context sequences
    cb_max_batch_tokens: int | None = None  # unset on a CPU: CPU_MAX_BATCH_TOKENS
    cb_page_size: int = 32  # tokens per paged-cache block: prompts share cached prefixes in whole blocks
    prefix_cache: bool = True  # requests reuse the cached blocks of a prompt prefix already computed
    log_level: str = "warning"
    api_key: str | None = None  # None: no key is checked (also read from HF_SIMPLEGPT_API_KEY by the serve job)
    allow_model_dir: str | None = None  # None: /load_model and /reset are off
    open_paths: tuple[str, ...] = ()  # paths the guard leaves alone: the chat page of `serve --chat`
    limits: Limits = field(default_factory=Limits)


# transformers sizes the paged cache from free memory; on a CPU that is a fraction of system RAM, and its attention
# mask ([batch tokens, cache tokens]) then takes gigabytes and half a minute to build. A CPU serves a handful of
# sequences at a time, so size for that.
CPU_CONCURRENT_SEQUENCES = 32
CPU_MAX_BATCH_TOKENS = 512


def register_simplegpt() -> None:
    """Make `getattr(transformers, "SimpleGPTForCausalLM")` work where transformers' serving model manager does it.

    transformers re-executes its own `__init__` while importing some submodules (`direct_transformers_import`), so
    `sys.modules["transformers"]` can be a different object from the one `model_manager.py` imported: set the classes
    on the object that module holds.
    """
    from transformers.cli.serving import model_manager

    for name in hf_simplegpt.__all__:
        setattr(model_manager.transformers, name, getattr(hf_simplegpt, name))


def adapter_base(folder: str) -> str | None:
    """The base model a PEFT adapter folder names (`base_model_name_or_path`), or None for a full model folder."""
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config} names no base_model_name_or_path; re-save the adapter with its base model set.")
    check_model_source(base, f"the base model of {folder} (base_model_name_or_path)")
    return base


def check_model_dir(model_dir: str) -> None:
    """A ValueError, before anything loads, when MODEL_DIR is not a model or adapter folder."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"MODEL_DIR {model_dir}: no such folder. Pass a saved model (or LoRA adapter) folder.")
    check_model_source(model_dir, "MODEL_DIR")
    adapter_base(model_dir)


# ------------------------------------------------------------------------------------------------ request handling


def _http_error(error: RequestError):
    from fastapi import HTTPException

    return HTTPException(status_code=error.status, detail=str(error))


def _bad_request(message: str):
    return _http_error(RequestError(message))


def top_logprobs(body: dict) -> int | None:
    """How many top logprobs per token a request asks for (0: the chosen token's alone), or None for no logprobs.
    Chat sends `logprobs: true` and `top_logprobs: N`; completions send `logprobs: N`."""
    logprobs = body.get("logprobs")
    if isinstance(logprobs, bool):
        return (body.get("top_logprobs") or 0) if logprobs else None
    return logprobs


def samples(body: dict) -> bool:
    """Whether the request asks for sampling, as OpenAI's API reads it: a temperature above 0 or a top_p below 1."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    return (temperature is not None and temperature > 0) or (top_p is not None and top_p < 1)


# Fields transformers' handlers would refuse (422) or misread; this app reads them itself from CURRENT_REQUEST.
OWN_FIELDS = (
    "top_k",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "echo",
    "stream_options",
    "user",
)


class CheckedHandler:
    """Mixin for transformers' chat, completion and responses handlers: `check_request` first, the body made visible
    to the generation managers while the request is set up, OpenAI's meaning of `temperature`, a chat template's
    refusal turned into a 400, and OpenAI's `usage` chunk in streams."""

    route: str
    limits: Limits = Limits()
    vocab_size: int | None = None
    model_root: Path | None = None  # set under --allow_model_dir: requests may name folders under it

    async def handle_request(self, body: dict, request_id: str):
        from fastapi.responses import JSONResponse, StreamingResponse
        from jinja2 import TemplateError

        try:
            check_request(body, self.route, self.limits, self.vocab_size)
            check_model_name(body, self.model_root)
        except RequestError as error:
            raise _http_error(error) from error
        top = top_logprobs(body) if self.route != "responses" else None
        if top is not None and body.get("max_tokens") != 0 and not self.generation_state._continuous_batching:
            raise _bad_request(
                "`logprobs` of generated tokens are recorded by continuous batching, which this server was started "
                "without (--no_continuous_batching); restart it without that flag or send the request without them."
            )
        reply = Reply()
        token, reply_token = CURRENT_REQUEST.set(body), CURRENT_REPLY.set(reply)
        try:
            response = await super().handle_request({k: v for k, v in body.items() if k not in OWN_FIELDS}, request_id)
        except TemplateError as error:
            raise _bad_request(f"The model's chat template rejected the messages: {error}") from error
        finally:
            CURRENT_REQUEST.reset(token)
            CURRENT_REPLY.reset(reply_token)
        if self.route == "responses":
            return response
        shaper = LogprobShaper(self.route, reply.tokenizer, top)
        if isinstance(response, StreamingResponse):
            include_usage = (body.get("stream_options") or {}).get("include_usage", False)
            response.body_iterator = openai_stream(response.body_iterator, include_usage, reply, shaper)
            return response
        if top is None and reply.echo_text is None:
            return response
        data = json.loads(response.body)
        shape_reply(data["choices"][0], reply, shaper)
        return JSONResponse(data, media_type="application/json")

    def _build_generation_config(self, body: dict, model_generation_config, use_cb: bool = False):
        # transformers seeds torch's global generator when the request arrives and maps frequency_penalty to
        # repetition_penalty; here the seed gets its own generator and the penalties OpenAI's meaning (sampling.py).
        config = super()._build_generation_config(body, model_generation_config, use_cb=use_cb)
        original = CURRENT_REQUEST.get() or body
        if samples(original):
            config.do_sample = True
        if original.get("top_k") is not None:
            config.top_k = original["top_k"]
        return config


def check_model_name(body: dict, model_root: Path | None) -> None:
    """Under --allow_model_dir, a request may name any folder under it, and nothing else."""
    if model_root is None or body.get("model") is None:
        return
    folder = resolve_under(model_root, body["model"])
    body["model"] = str(folder)


def resolve_under(root: Path, name) -> Path:
    """The folder `name` (absolute, or relative to `root`) if it lies under `root`; else a 403 that does not say
    whether it exists."""
    if not isinstance(name, str) or not name:
        raise RequestError(f"`model` must be a folder name under the allowed model folder, got {name!r}.")
    folder = (root / name).resolve()
    if not folder.is_relative_to(root):
        raise RequestError(f"`model` {name!r} is not under the allowed model folder {root} (--allow_model_dir).", 403)
    if not folder.is_dir():
        raise RequestError(f"`model` {name!r}: no such folder under {root}.", 404)
    return folder


def shape_reply(choice: dict, reply: Reply, shaper: LogprobShaper) -> None:
    """A whole reply's choice: the echoed prompt before its text, and the logprobs (the prompt's, then the reply's)."""
    if reply.echo_text is not None:
        choice["text"] = reply.echo_text + choice["text"]
    if shaper.top is not None:
        choice["logprobs"] = shaper.shape((reply.echo_entries or []) + reply.generated)


async def openai_stream(chunks, include_usage: bool, reply: Reply | None = None, shaper: LogprobShaper | None = None):
    """transformers' SSE stream, as OpenAI sends it: no `usage` in the chunk that carries the finish_reason; with
    `include_usage`, a final chunk of its own with `choices: []` and the usage; then `data: [DONE]`.

    With `echo`, a first chunk carries the prompt (and its logprobs); with logprobs, each chunk with text carries the
    logprobs of the tokens generated since the chunk before, and the last one the rest, so that a stream's logprobs,
    joined, are the whole reply's."""
    sent, first = 0, True

    def shaped(chunk: dict) -> list[dict]:
        nonlocal sent, first
        if not chunk.get("choices") or reply is None:
            return [chunk]
        extra = []
        if first and reply.echo_text is not None:
            head = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
            echo = {"text": reply.echo_text, "index": 0, "logprobs": None, "finish_reason": None}
            if shaper.top is not None:
                echo["logprobs"] = shaper.shape(reply.echo_entries)
            extra.append({**head, "choices": [echo]})
        first = False
        choice = chunk["choices"][0]
        has_text = "text" in choice or (choice.get("delta") or {}).get("content") is not None
        if shaper.top is not None and (has_text or choice.get("finish_reason")):
            generated = reply.generated
            done = len(generated)
            choice["logprobs"] = shaper.shape(generated[sent:done])
            sent = done
        return extra + [chunk]

    async for part in chunks:
        events = []
        for event in part.split("\n\n"):
            if not event:
                continue
            chunk = json.loads(event[6:]) if event.startswith("data: {") else None
            if not isinstance(chunk, dict):
                events.append(event)
                continue
            *before, chunk = shaped(chunk)
            events += ["data: " + json.dumps(c) for c in before]
            if "usage" not in chunk:
                events.append("data: " + json.dumps(chunk))
                continue
            usage = chunk.pop("usage")
            events.append("data: " + json.dumps(chunk))
            if include_usage:
                head = {key: chunk[key] for key in ("id", "object", "created", "model") if key in chunk}
                events.append("data: " + json.dumps({**head, "choices": [], "usage": usage}))
        if events:
            yield "".join(event + "\n\n" for event in events)
    yield "data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------------ generation


def check_prompt_length(model, prompt_len: int, max_prompt_tokens: int | None, reply: bool = True) -> int | None:
    """Refuse (400) a prompt over --max_prompt_tokens, or one that does not fit the model's context (with room for
    one more token when a `reply` is to be generated); return the room left (None: the model has no limit)."""
    if max_prompt_tokens is not None and prompt_len > max_prompt_tokens:
        raise _bad_request(
            f"The prompt is {prompt_len} tokens; the limit is {max_prompt_tokens} (--max_prompt_tokens)."
        )
    limit = context_length(model)
    if limit is None:
        return None
    if prompt_len > limit or (reply and prompt_len == limit):
        raise _bad_request(
            f"The prompt is {prompt_len} tokens and this model's context is {limit} positions, which leaves no room "
            f"for {'a reply' if reply else 'it'}. Shorten the prompt (or the conversation)."
        )
    return limit - prompt_len


def fit_to_context(model, inputs: dict, generation_config, max_prompt_tokens: int | None = None) -> None:
    """Refuse (400) a prompt over --max_prompt_tokens, or one that leaves no room in the model's context; cap
    `max_new_tokens` at the room left."""
    ids = inputs["input_ids"]
    room = check_prompt_length(model, len(ids) if isinstance(ids, list) else ids.shape[-1], max_prompt_tokens)
    if room is not None and (generation_config.max_new_tokens is None or generation_config.max_new_tokens > room):
        generation_config.max_new_tokens = room


def stop_strings(generation_config) -> list[str]:
    stops = generation_config.stop_strings
    return [stops] if isinstance(stops, str) else list(stops or [])


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """(text before the first stop string, whether one was found)."""
    cuts = [at for at in (text.find(stop) for stop in stops) if at >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopAtStrings:
    """The text queue of a streamed reply, ended before the first stop string as OpenAI's API does (transformers'
    `stop_strings` stop generation after the string, which is then part of the text).

    Text that could be the beginning of a stop string is held back until the next chunk settles it. Offers the
    `get` / `get_nowait` the handlers read their queue with; items that are not text pass through. `on_end` is called
    when the stream ends.
    """

    def __init__(self, queue, stops: list[str], on_end=None):
        self.queue, self.stops, self.on_end = queue, stops, on_end
        self.pending, self.stopped, self.ready = "", False, deque()

    async def get(self):
        while not self.ready:
            self.push(await self.queue.get())
        return self.ready.popleft()

    def get_nowait(self):
        while not self.ready:
            self.push(self.queue.get_nowait())  # asyncio.QueueEmpty when nothing more has arrived
        return self.ready.popleft()

    def push(self, item) -> None:
        if type(item) is not str:  # end of stream (None), an error, or a typed item such as a tool call
            if self.on_end is not None and (item is None or type(item).__name__ == "_StreamError"):
                self.on_end()
            if item is None and self.pending and not self.stopped:
                self.ready.append(self.pending)
            self.pending = ""
            self.ready.append(item)
            return
        if self.stopped:  # the rest of the token that completed the stop string
            return
        text, self.stopped = cut_at_stop(self.pending + item, self.stops)
        # Hold back the longest tail that begins some stop string.
        starts = (k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k]))
        held = 0 if self.stopped else max(starts, default=0)
        self.pending = text[len(text) - held :] if held else ""
        if len(text) > held:
            self.ready.append(text[: len(text) - held])


def decode_as_streamed(processor, ids) -> str:
    """The text transformers streams for these generated ids: decoded token by token with tokenizers'
    `DecodeStream`, which holds back the bytes of an unfinished character, so a reply that ends (at max_tokens) in the
    middle of a multi-byte character ends before it rather than with U+FFFD."""
    from tokenizers.decoders import DecodeStream

    tokenizer = getattr(processor, "tokenizer", processor)._tokenizer
    stream = DecodeStream([], skip_special_tokens=True)
    ids = ids.tolist() if hasattr(ids, "tolist") else ids
    return "".join(text for text in (stream.step(tokenizer, token) for token in ids) if text)


def decoding_for(gen_config, body: dict, processor):
    """The `sampling.Decoding` of a request: its GenerationConfig (the folder's, with the request's overrides) and
    the OpenAI fields transformers does not read."""
    from hf_simplegpt.serving.sampling import Decoding

    sample = bool(gen_config.do_sample)
    return Decoding(
        do_sample=sample,
        temperature=(gen_config.temperature or 1.0) if sample else 1.0,
        top_k=(gen_config.top_k or 0) if sample else 0,
        top_p=(gen_config.top_p or 1.0) if sample else 1.0,
        repetition_penalty=gen_config.repetition_penalty or 1.0,
        frequency_penalty=body.get("frequency_penalty") or 0.0,
        presence_penalty=body.get("presence_penalty") or 0.0,
        logit_bias={int(token): float(bias) for token, bias in (body.get("logit_bias") or {}).items()},
        seed=body.get("seed"),
        stops=stop_strings(gen_config),
        top_logprobs=top_logprobs(body),
        tokenizer=getattr(processor, "tokenizer", processor)._tokenizer,
    )


class ServedManager:
    """A transformers generation manager (sequential or continuous batching) that keeps each request inside the
    model's context (`fit_to_context`), decodes it with its own settings in the batch (`decoding_for`), ends its text
    before a stop string (`StopAtStrings`), and decodes a whole reply exactly as its stream is decoded
    (`decode_as_streamed`), so streamed and non-streamed text are equal."""

    def __init__(self, manager, limits: Limits):
        self.manager, self.limits = manager, limits

    def __getattr__(self, name):
        return getattr(self.manager, name)

    def _prepare(self, model, processor, inputs, gen_config, request_id: str):
        fit_to_context(model, inputs, gen_config, self.limits.max_prompt_tokens)
        sampler = getattr(self.manager, "sampler", None)
        body = CURRENT_REQUEST.get() or {}
        decoding = decoding_for(gen_config, body, processor)
        reply = CURRENT_REPLY.get()
        if reply is not None:  # the handler shapes the response from what the decoding records
            reply.decoding, reply.tokenizer = decoding, decoding.tokenizer
        if sampler is not None:
            sampler.register(request_id, decoding)
        elif body.get("frequency_penalty") or body.get("presence_penalty") or body.get("logit_bias"):
            inputs["logits_processor"] = openai_penalties(decoding, inputs)
        return sampler

    def generate_streaming(self, model, processor, inputs, gen_config, request_id: str, **kwargs):
        sampler = self._prepare(model, processor, inputs, gen_config, request_id)
        queue, streamer = self.manager.generate_streaming(
            model, processor, inputs, gen_config, request_id=request_id, **kwargs
        )
        if sampler is None:
            return StopAtStrings(queue, stop_strings(gen_config)), streamer
        cancel = streamer.cancel

        def cancel_and_forget():  # the client went away: the batch drops the request, the sampler its settings
            cancel()
            sampler.forget(request_id)

        streamer.cancel = cancel_and_forget
        return StopAtStrings(queue, stop_strings(gen_config), lambda: sampler.forget(request_id)), streamer

    async def generate_non_streaming(self, model, processor, inputs, gen_config, request_id: str, **kwargs):
        sampler = self._prepare(model, processor, inputs, gen_config, request_id)
        try:
            _, input_len, generated_ids = await self.manager.generate_non_streaming(
                model, processor, inputs, gen_config, request_id=request_id, **kwargs
            )
        finally:
            if sampler is not None:
                sampler.forget(request_id)
        text = decode_as_streamed(processor, generated_ids)
        return cut_at_stop(text, stop_strings(gen_config))[0], input_len, generated_ids


def openai_penalties(decoding, inputs: dict):
    """OpenAI's frequency/presence penalties and logit_bias as a logits processor for `generate` (the path of
    --no_continuous_batching), applied as `sampling.penalise` applies them in the batch."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from hf_simplegpt.serving.sampling import penalise

    decoding.repetition_penalty = 1.0  # generate applies the GenerationConfig's own
    prompt_len = inputs["input_ids"].shape[-1]

    class OpenAIPenalties(LogitsProcessor):
        def __call__(self, input_ids, scores):
            for row in range(scores.size(0)):
                penalise(scores[row], decoding, [], input_ids[row, prompt_len:].tolist())
            return scores

    return LogitsProcessorList([OpenAIPenalties()])


def seeded(fn):
    """`fn`, preceded by `torch.manual_seed(seed)` when the current request has a seed. Called when the request is
    queued for the inference thread (the path of --no_continuous_batching), it seeds in that thread right before the
    request's own `generate`."""
    seed = (CURRENT_REQUEST.get() or {}).get("seed")
    if seed is None:
        return fn

    def run(*args, **kwargs):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)

    return run


def neutral_generation_config(model):
    """The config continuous batching is started with: greedy, no logits processors (each request's own settings
    are applied per row by `RowSampler`)."""
    from transformers import GenerationConfig

    own = model.generation_config
    return GenerationConfig(
        do_sample=False, eos_token_id=own.eos_token_id, pad_token_id=own.pad_token_id, bos_token_id=own.bos_token_id
    )


def _serving_classes():
    """The subclasses of transformers' serving parts (imported late: they need transformers[serving])."""
    from transformers import ContinuousBatchingConfig
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.utils import CBGenerateManager, GenerateManager, GenerationState

    from hf_simplegpt.serving.sampling import PREFIX_COUNTERS, RowSamplingBatchingManager

    class FolderModelManager(ModelManager):
        """transformers' model manager, which also serves a PEFT adapter folder, merged into its base on load."""

        def _load_model(self, model_id_and_revision: str, **kwargs):
            base = adapter_base(model_id_and_revision)
            if base is None:
                return super()._load_model(model_id_and_revision, **kwargs)
            from peft import PeftModel

            model = super()._load_model(base, **kwargs)
            return PeftModel.from_pretrained(model, model_id_and_revision).merge_and_unload()

        def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
            base = adapter_base(model_id_and_revision)
            has_tokenizer = (Path(model_id_and_revision) / "tokenizer_config.json").is_file()
            folder = model_id_and_revision if base is None or has_tokenizer else base
            return super()._load_processor(folder, gguf_file=gguf_file)

    class SeededGenerateManager(GenerateManager):
        """transformers' sequential manager, seeding each request's `generate` in the inference thread."""

        def submit(self, fn, *args, **kwargs):
            return super().submit(seeded(fn), *args, **kwargs)

        def async_submit(self, fn, *args, **kwargs):
            return super().async_submit(seeded(fn), *args, **kwargs)

    class RowSamplingCBManager(CBGenerateManager):
        """transformers' continuous-batching manager, started as `RowSamplingBatchingManager`: each request is decoded
        with its own settings. CUDA graphs and async batching stay off: the sampling step reads each row's request."""

        def init_cb(self, model, gen_config):
            if self._cb is not None:
                return
            config = copy.deepcopy(self._cb_config) or ContinuousBatchingConfig()
            config.use_cuda_graph, config.use_async_batching = False, False
            self._cb = RowSamplingBatchingManager(model, neutral_generation_config(model), config)
            self._cb.start()

        @property
        def sampler(self):
            return self._cb.sampler

    class RoutingGenerationState(GenerationState):
        """Every request to continuous batching (when on), each with its own decoding; every manager handed out keeps
        its requests inside the context."""

        limits: Limits = Limits()

        def get_manager(self, model_id: str, use_cb: bool = False):
            if use_cb and self._cb_manager is None:
                self._cb_manager, self._cb_model_id = RowSamplingCBManager(cb_config=self._cb_config), model_id
            if not use_cb and model_id not in self._generate_managers:
                self._generate_managers[model_id] = SeededGenerateManager()
            return ServedManager(super().get_manager(model_id, use_cb=use_cb), self.limits)

        def prefix_stats(self) -> dict:
            cb = self._cb_manager._cb if self._cb_manager is not None else None
            return dict(cb.prefix_stats) if cb is not None else dict.fromkeys(PREFIX_COUNTERS, 0)

    class TokenPromptCompletionHandler(CompletionHandler):
        """transformers' completions handler, which also takes a prompt of token ids (`[47, 76]` or `[[47, 76]]`), as
        OpenAI's API and lm-eval's `local-completions` send them."""

        async def handle_request(self, body: dict, request_id: str):
            self._validate_request(body)
            model_id, model, processor = self._resolve_model(body)
            modality = self.model_manager.get_model_modality(model, processor=processor)
            use_cb = self.generation_state.use_continuous_batching(model, modality)
            gen_manager = self.generation_state.get_manager(model_id, use_cb=use_cb)
            tokenizer = getattr(processor, "tokenizer", processor)
            ids = token_prompt(body["prompt"])
            if ids is None:
                ids = tokenizer(body["prompt"])["input_ids"]
            original, reply = CURRENT_REQUEST.get() or body, CURRENT_REPLY.get()
            if original.get("echo") and reply is not None:
                # OpenAI's echo: the prompt before the reply, with its tokens' logprobs (lm-eval's loglikelihood).
                generate = body.get("max_tokens") != 0
                check_prompt_length(model, len(ids), self.limits.max_prompt_tokens, reply=generate)
                reply.tokenizer = tokenizer._tokenizer
                reply.echo_text = body["prompt"] if isinstance(body["prompt"], str) else tokenizer.decode(ids)
                top = top_logprobs(original)
                if top is not None:
                    if model.config._attn_implementation.startswith("paged"):
                        # Continuous batching turned eager attention into its paged form, which has no causal mask
                        # outside the batch: a forward pass of its own would score the prompt wrongly.
                        raise _bad_request(
                            "`echo` with `logprobs` scores the prompt in a forward pass of its own, which the paged "
                            "eager attention continuous batching uses cannot run; restart the server with "
                            "--attn_implementation sdpa (the default)."
                        )
                    reply.echo_entries = await asyncio.to_thread(score_prompt, model, ids, top)
                if not generate:
                    return self._echo_only(request_id, model_id, len(ids), body.get("stream"))
            if use_cb:
                inputs = {"input_ids": ids}
            else:
                tensor = torch.tensor([ids], device=model.device)
                inputs = {"input_ids": tensor, "attention_mask": torch.ones_like(tensor)}
            gen_config = self._build_generation_config(body, model.generation_config, use_cb=use_cb)
            if use_cb:
                gen_manager.init_cb(model, gen_config)
            args = (request_id, model, processor, model_id, inputs, gen_config, gen_manager, body.get("suffix"))
            return self._streaming(*args) if body.get("stream") else await self._non_streaming(*args)

        def _echo_only(self, request_id: str, model_id: str, prompt_len: int, stream: bool):
            """The reply to `max_tokens: 0` with `echo`: nothing generated (the handler adds the prompt)."""
            from fastapi.responses import JSONResponse, StreamingResponse
            from openai.types import CompletionUsage

            usage = CompletionUsage(prompt_tokens=prompt_len, completion_tokens=0, total_tokens=prompt_len)
            if stream:

                async def one_chunk():
                    yield self._build_chunk_sse(request_id, model_id, finish_reason="length", usage=usage)

                return StreamingResponse(one_chunk(), media_type="text/event-stream")
            choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}
            completion = {"id": request_id, "object": "text_completion", "created": int(time.time()), "model": model_id}
            return JSONResponse({**completion, "choices": [choice], "usage": usage.model_dump(exclude_none=True)})

    class ChatHandler(CheckedHandler, ChatCompletionHandler):
        route = "chat"

    class TextCompletionHandler(CheckedHandler, TokenPromptCompletionHandler):
        route = "completions"

    class ResponsesHandler(CheckedHandler, ResponseHandler):
        route = "responses"

    return FolderModelManager, RoutingGenerationState, ChatHandler, TextCompletionHandler, ResponsesHandler


def openai_errors(app) -> None:
    """Answer errors in OpenAI's shape, `{"error": {"message", "type", "code"}}`: the `openai` client shows that
    message, and none of FastAPI's `{"detail": ...}` (transformers' shape)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def error(status: int, message: str) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request, exc: RequestValidationError):
        problems = "; ".join(f"{e['msg']} at {'.'.join(map(str, e['loc']))}" for e in exc.errors())
        return error(422, f"Invalid request body: {problems}")


def continuous_batching_config(model, options: ServeOptions):
    """The paged cache's size: the flags, else (on a CPU) room for a few full-context sequences, else (on an
    accelerator) transformers' sizing from free memory."""
    from transformers import ContinuousBatchingConfig

    num_blocks, max_batch_tokens, page_size = options.cb_num_blocks, options.cb_max_batch_tokens, options.cb_page_size
    if model.device.type == "cpu":
        pages_per_sequence = math.ceil((context_length(model) or page_size) / page_size)
        num_blocks = num_blocks or CPU_CONCURRENT_SEQUENCES * pages_per_sequence
        max_batch_tokens = max_batch_tokens or CPU_MAX_BATCH_TOKENS
    sizes = {"num_blocks": num_blocks, "max_batch_tokens": max_batch_tokens}
    return ContinuousBatchingConfig(
        page_size=page_size,
        allow_block_sharing=options.prefix_cache,
        **{k: v for k, v in sizes.items() if v is not None},
    )


# ------------------------------------------------------------------------------------------------ guard and app


class Guard:
    """ASGI middleware, before any route: the API key (every route but /health, as vLLM's --api-key), and the request
    body read here whole, refused when larger than `max_body_bytes` (413) or slower to arrive than BODY_TIMEOUT_S
    (408), so that no handler ever waits on a client or holds a body the server did not agree to."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, open_paths: tuple[str, ...] = ()):
        self.app, self.api_key, self.max_body_bytes, self.open_paths = app, api_key, max_body_bytes, open_paths

    async def __call__(self, scope, receive, send):
        # open_paths: the chat page mounted beside the API (`--chat`, never with --api_key), which streams its own way.
        if scope["type"] != "http" or (self.open_paths and scope["path"].startswith(self.open_paths)):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.api_key is not None and scope["path"] != "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                return await self.refuse(
                    send,
                    401,
                    "Missing or wrong API key: send the header "
                    "`Authorization: Bearer KEY` with the server's --api_key.",
                )
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return await self.refuse(
                send,
                413,
                f"The request body is {length.decode()[:20]} bytes; the limit is "
                f"{self.max_body_bytes} (--max_body_bytes).",
            )
        body, more = b"", scope["method"] in ("POST", "PUT", "PATCH")
        while more:
            try:
                message = await asyncio.wait_for(receive(), BODY_TIMEOUT_S)
            except TimeoutError:
                return await self.refuse(send, 408, f"The request body did not arrive within {BODY_TIMEOUT_S:.0f} s.")
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self.refuse(
                    send, 413, f"The request body is over {self.max_body_bytes} bytes, the limit (--max_body_bytes)."
                )
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming reply watches for

        return await self.app(scope, replay, send)

    @staticmethod
    async def refuse(send, status: int, message: str) -> None:
        payload = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": status}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


# transformers' routes that this app does not serve by default: model management (under --allow_model_dir only), and
# the audio and "systemone" routes, which a text model has no use for.
MODEL_MANAGEMENT_ROUTES = ("/load_model", "/reset")
UNSERVED_ROUTES = ("/v1/audio/transcriptions", "/v1/systemone")


def drop_routes(app, paths) -> None:
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in paths]


def model_management_routes(app, model_manager, served: str, root: Path | None) -> None:
    """transformers' /load_model and /reset. By default /load_model answers for the served folder alone (clients such
    as `transformers chat` call it to check the model is loaded) and /reset is off; under --allow_model_dir both
    take folders under it, and a folder elsewhere is a 403 that does not say whether it exists."""
    from fastapi.responses import JSONResponse, StreamingResponse

    drop_routes(app, MODEL_MANAGEMENT_ROUTES)

    @app.post("/load_model")
    async def load_model(body: dict):
        try:
            if root is not None:
                name = str(resolve_under(root, body.get("model")))
            elif body.get("model") != served:
                raise RequestError(
                    f"This server serves {served!r} only; start it with --allow_model_dir DIR to load other folders.",
                    403,
                )
            else:
                name = served
        except RequestError as error:
            raise _http_error(error) from error
        model_id = model_manager.process_model_name(name)
        return StreamingResponse(model_manager.load_model_streaming(model_id), media_type="text/event-stream")

    if root is not None:

        @app.post("/reset")
        def reset():
            model_manager.shutdown()
            return JSONResponse({"status": "ok"})


def metrics_route(app, generation_state) -> None:
    """GET /metrics: the prompt cache's counters (prompts scheduled, their tokens, tokens read from cached blocks)."""
    from fastapi.responses import JSONResponse

    @app.get("/metrics")
    def metrics():
        stats = generation_state.prefix_stats()
        tokens = stats.get("prompt_tokens", 0)
        stats["prefix_cache_hit_rate"] = stats.get("cached_prompt_tokens", 0) / tokens if tokens else 0.0
        return JSONResponse({"prefix_cache": stats})


def build_app(model_dir: str, options: ServeOptions | None = None):
    """The FastAPI app serving `model_dir` (a model or adapter folder) under the model name `model_dir`.

    Loads the model at once. Routes: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`, `/v1/models`,
    `/health`, `/metrics`, `/load_model` (of `model_dir` only), and `/reset` only under `options.allow_model_dir`.
    """
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.utils import logging as transformers_logging

    options = options or ServeOptions()
    check_model_dir(model_dir)
    register_simplegpt()
    transformers_logging.get_logger("transformers").setLevel(transformers_logging.log_levels[options.log_level])
    FolderModelManager, RoutingGenerationState, ChatHandler, TextCompletionHandler, ResponsesHandler = (
        _serving_classes()
    )
    root = Path(options.allow_model_dir).resolve() if options.allow_model_dir else None
    model_manager = FolderModelManager(
        device=options.device,
        dtype=options.dtype,
        attn_implementation=options.attn_implementation,
        continuous_batching=options.continuous_batching,
        force_model=model_dir,
    )
    model, _ = model_manager.load_model_and_processor(model_manager.process_model_name(model_dir))
    if root is not None:  # requests name folders under the root; the one started with is loaded already
        model_manager.force_model = None
    generation_state = RoutingGenerationState(
        continuous_batching=options.continuous_batching,
        cb_config=continuous_batching_config(model, options) if options.continuous_batching else None,
    )
    generation_state.limits = options.limits
    handlers = {"model_manager": model_manager, "generation_state": generation_state}
    chat, completion, responses = (cls(**handlers) for cls in (ChatHandler, TextCompletionHandler, ResponsesHandler))
    for handler in (chat, completion, responses):
        handler.limits, handler.vocab_size, handler.model_root = options.limits, model.config.vocab_size, root
    app = build_server(
        model_manager,
        chat,
        completion_handler=completion,
        response_handler=responses,
        transcription_handler=TranscriptionHandler(model_manager, generation_state),
        systemone_handler=SystemOneHandler(**handlers),
        generation_state=generation_state,
    )
    drop_routes(app, UNSERVED_ROUTES)
    model_management_routes(app, model_manager, model_dir, root)
    metrics_route(app, generation_state)
    openai_errors(app)
    app.add_middleware(
        Guard, api_key=options.api_key, max_body_bytes=options.limits.max_body_bytes, open_paths=options.open_paths
    )
    app.state.generation_state = generation_state  # stopped by the server on shutdown
    return app
