"""The OpenAI-compatible app: transformers' own serving app (`transformers serve`), configured for SimpleGPT folders.

`build_app(model_dir)` returns the FastAPI app that `transformers serve MODEL --continuous-batching` builds, from the
same parts (`ModelManager`, `GenerationState`, the request handlers, `build_server`), with these changes, each made by
subclassing or wrapping a part and none by copying its code:

1. SimpleGPT loads: transformers' model manager resolves the class as `getattr(transformers, architectures[0])`, so
   `register_simplegpt()` puts the SimpleGPT classes on the module object it reads.
2. A LoRA/DoRA adapter folder is served too: its base model is loaded the way transformers loads any model, and the
   adapter is merged into it with PEFT (`merge_and_unload`), so decoding costs what the base costs.
3. Bad requests get a 4xx that names the problem before any work (`check_request`): missing or malformed `messages`
   or `prompt`, `max_tokens` < 1, `temperature` < 0, `top_p` outside (0, 1], `n` > 1, a `stop` that is not text, a
   conversation the chat template rejects. transformers answers some of these with a 500 or ignores them. Errors
   come in OpenAI's shape (`openai_errors`), so the `openai` client shows their message.
4. Every request stays inside the model's context (learned positions end there): a prompt that fills the context
   is refused with a 400; otherwise `max_tokens` (default: the rest of the context) is capped at what the context
   leaves after the prompt, and the reply then ends with `finish_reason: "length"`.
5. Decoding settings are honoured exactly. transformers' continuous batching applies the settings of the first
   request to every later one (temperature, top_p, do_sample) and has no stop strings or per-request seeds, so here
   it serves the requests it decodes exactly: those that keep the folder's own decoding (its generation_config),
   setting only `max_tokens` (or `temperature=0` on a greedy folder). A request with its own sampling
   settings, `stop`, `seed`, penalties or a `generation_config` is decoded by `generate`, one at a time, as asked.
   As in OpenAI's API, `temperature > 0` or `top_p < 1` turns sampling on; `seed` seeds the generator right before
   that request is decoded, so concurrent requests cannot draw from its stream.
6. Replies read as in OpenAI's API: the text ends before a stop string (transformers keeps it), and a whole reply is
   decoded as its stream is, so streamed and non-streamed text are equal.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch

import hf_simplegpt
from hf_simplegpt.generation import context_length
from hf_simplegpt.hub import check_model_source

# The body of the request being handled, seen by the generation state and managers that serve it (they are called
# from the handler's own task, so each request sees its own body).
CURRENT_REQUEST: ContextVar[dict | None] = ContextVar("hf_simplegpt_current_request", default=None)

# Request fields that ask for decoding continuous batching cannot reproduce per request.
OWN_DECODING_FIELDS = ("top_p", "stop", "seed", "frequency_penalty", "presence_penalty", "logit_bias",
                       "generation_config")  # fmt: skip


@dataclass
class ServeOptions:
    """How the app loads and decodes; the `hf-simplegpt serve` flags of the same names."""

    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = None
    continuous_batching: bool = True
    cb_num_blocks: int | None = None  # unset on a CPU: room for CPU_CONCURRENT_SEQUENCES full-context sequences
    cb_max_batch_tokens: int | None = None  # unset on a CPU: CPU_MAX_BATCH_TOKENS
    log_level: str = "warning"


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


# ------------------------------------------------------------------------------------------------ request checks


def _bad_request(message: str):
    from fastapi import HTTPException

    return HTTPException(status_code=400, detail=message)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_request(body: dict, route: str) -> None:
    """Raise a 400 naming the first problem of an OpenAI request body for `route` ("chat" or "completions")."""
    if route == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_request("`messages` is required: a non-empty list of {\"role\": ..., \"content\": ...}.")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _bad_request(f"messages[{i}] must be an object with a string `role`, got {message!r}.")
            content = message.get("content")
            if not (isinstance(content, str | list) or (content is None and message.get("tool_calls"))):
                raise _bad_request(f"messages[{i}].content must be a string or a list of content parts.")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad_request("`prompt` is required: a non-empty string.")
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise _bad_request(f"`{field}` must be a positive integer, got {value!r}.")
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and (not _is_number(temperature) or temperature < 0):
        raise _bad_request(f"`temperature` must be a number >= 0, got {temperature!r}.")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise _bad_request(f"`top_p` must be a number in (0, 1], got {top_p!r}.")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _bad_request(f"`seed` must be an integer, got {seed!r}.")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise _bad_request(f"`stop` must be a non-empty string or a list of them, got {stop!r}.")
    if body.get("n") not in (None, 1):
        raise _bad_request(f"`n` = {body['n']!r}: this server returns one choice per request; send n=1 (or no n).")


def samples(body: dict) -> bool:
    """Whether the request asks for sampling, as OpenAI's API reads it: a temperature above 0 or a top_p below 1."""
    temperature, top_p = body.get("temperature"), body.get("top_p")
    return (temperature is not None and temperature > 0) or (top_p is not None and top_p < 1)


def batchable(body: dict, generation_config) -> bool:
    """Whether continuous batching decodes this request exactly as asked: it keeps the folder's decoding settings
    (which continuous batching applies to the whole batch) and sets only max_tokens, or temperature=0 on a greedy
    folder."""
    if any(body.get(field) is not None for field in OWN_DECODING_FIELDS):
        return False
    temperature = body.get("temperature")
    return temperature is None or (temperature == 0 and not generation_config.do_sample)


class CheckedHandler:
    """Mixin for transformers' chat and completion handlers: `check_request` first, the body made visible to the
    generation state while the request is set up, OpenAI's meaning of `temperature`, and a chat template's refusal
    turned into a 400."""

    route: str

    async def handle_request(self, body: dict, request_id: str):
        from jinja2 import TemplateError

        check_request(body, self.route)
        token = CURRENT_REQUEST.set(body)
        try:
            return await super().handle_request(body, request_id)
        except TemplateError as error:
            raise _bad_request(f"The model's chat template rejected the messages: {error}") from error
        finally:
            CURRENT_REQUEST.reset(token)

    def _build_generation_config(self, body: dict, model_generation_config, use_cb: bool = False):
        # transformers seeds torch's global generator here, when the request arrives, which reseeds whatever request
        # is being sampled at that moment; `seeded` seeds in the inference thread instead.
        body = {key: value for key, value in body.items() if key != "seed"}
        config = super()._build_generation_config(body, model_generation_config, use_cb=use_cb)
        if samples(body):
            config.do_sample = True
        return config


# ------------------------------------------------------------------------------------------------ generation


def fit_to_context(model, inputs: dict, generation_config) -> None:
    """Refuse (400) a prompt that leaves no room in the model's context; cap `max_new_tokens` at the room left."""
    ids = inputs["input_ids"]
    prompt_len = len(ids) if isinstance(ids, list) else ids.shape[-1]
    limit = context_length(model)
    if limit is None:
        return
    if prompt_len >= limit:
        raise _bad_request(
            f"The prompt is {prompt_len} tokens and this model's context is {limit} positions, which leaves no room "
            "for a reply. Shorten the prompt (or the conversation)."
        )
    room = limit - prompt_len
    if generation_config.max_new_tokens is None or generation_config.max_new_tokens > room:
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
    `get` / `get_nowait` the handlers read their queue with; items that are not text pass through.
    """

    def __init__(self, queue, stops: list[str]):
        self.queue, self.stops = queue, stops
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


class ServedManager:
    """A transformers generation manager (sequential or continuous batching) that keeps each request inside the
    model's context (`fit_to_context`), ends its text before a stop string (`StopAtStrings`), and decodes a whole
    reply exactly as its stream is decoded (`decode_as_streamed`), so streamed and non-streamed text are equal."""

    def __init__(self, manager):
        self.manager = manager

    def __getattr__(self, name):
        return getattr(self.manager, name)

    def generate_streaming(self, model, processor, inputs, gen_config, **kwargs):
        fit_to_context(model, inputs, gen_config)
        queue, streamer = self.manager.generate_streaming(model, processor, inputs, gen_config, **kwargs)
        stops = stop_strings(gen_config)
        return (StopAtStrings(queue, stops) if stops else queue), streamer

    async def generate_non_streaming(self, model, processor, inputs, gen_config, **kwargs):
        fit_to_context(model, inputs, gen_config)
        _, input_len, generated_ids = await self.manager.generate_non_streaming(
            model, processor, inputs, gen_config, **kwargs
        )
        text = decode_as_streamed(processor, generated_ids)
        return cut_at_stop(text, stop_strings(gen_config))[0], input_len, generated_ids


def seeded(fn):
    """`fn`, preceded by `torch.manual_seed(seed)` when the current request has a seed. Called when the request is
    queued for the inference thread, it seeds in that thread right before the request's own `generate`."""
    seed = (CURRENT_REQUEST.get() or {}).get("seed")
    if seed is None:
        return fn

    def run(*args, **kwargs):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)

    return run


def _serving_classes():
    """The subclasses of transformers' serving parts (imported late: they need transformers[serving])."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import GenerateManager, GenerationState

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

    class RoutingGenerationState(GenerationState):
        """Continuous batching for the requests it decodes exactly (`batchable`), `generate` for the others; every
        manager handed out keeps its requests inside the context."""

        def use_continuous_batching(self, model, modality) -> bool:
            body = CURRENT_REQUEST.get()
            return (
                super().use_continuous_batching(model, modality)
                and body is not None
                and batchable(body, model.generation_config)
            )

        def get_manager(self, model_id: str, use_cb: bool = False):
            if not use_cb and model_id not in self._generate_managers:
                self._generate_managers[model_id] = SeededGenerateManager()
            return ServedManager(super().get_manager(model_id, use_cb=use_cb))

    class ChatHandler(CheckedHandler, ChatCompletionHandler):
        route = "chat"

    class TextCompletionHandler(CheckedHandler, CompletionHandler):
        route = "completions"

    return FolderModelManager, RoutingGenerationState, ChatHandler, TextCompletionHandler


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

    num_blocks, max_batch_tokens = options.cb_num_blocks, options.cb_max_batch_tokens
    if model.device.type == "cpu":
        page_size = ContinuousBatchingConfig().page_size
        pages_per_sequence = math.ceil((context_length(model) or page_size) / page_size)
        num_blocks = num_blocks or CPU_CONCURRENT_SEQUENCES * pages_per_sequence
        max_batch_tokens = max_batch_tokens or CPU_MAX_BATCH_TOKENS
    sizes = {"num_blocks": num_blocks, "max_batch_tokens": max_batch_tokens}
    return ContinuousBatchingConfig(**{k: v for k, v in sizes.items() if v is not None})


def build_app(model_dir: str, options: ServeOptions | None = None):
    """The FastAPI app serving `model_dir` (a model or adapter folder) under the model name `model_dir`.

    Loads the model at once. Routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health` and the rest
    of transformers' app (`/v1/responses`, `/load_model`, `/reset`).
    """
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.utils import logging as transformers_logging

    options = options or ServeOptions()
    check_model_dir(model_dir)
    register_simplegpt()
    transformers_logging.get_logger("transformers").setLevel(transformers_logging.log_levels[options.log_level])
    FolderModelManager, RoutingGenerationState, ChatHandler, TextCompletionHandler = _serving_classes()

    model_manager = FolderModelManager(
        device=options.device,
        dtype=options.dtype,
        attn_implementation=options.attn_implementation,
        continuous_batching=options.continuous_batching,
        force_model=model_dir,
    )
    model, _ = model_manager.load_model_and_processor(model_manager.process_model_name(model_dir))
    generation_state = RoutingGenerationState(
        continuous_batching=options.continuous_batching,
        cb_config=continuous_batching_config(model, options) if options.continuous_batching else None,
    )
    handlers = {"model_manager": model_manager, "generation_state": generation_state}
    app = build_server(
        model_manager,
        ChatHandler(**handlers),
        completion_handler=TextCompletionHandler(**handlers),
        response_handler=ResponseHandler(**handlers),
        transcription_handler=TranscriptionHandler(model_manager, generation_state),
        systemone_handler=SystemOneHandler(**handlers),
        generation_state=generation_state,
    )
    openai_errors(app)
    app.state.generation_state = generation_state  # stopped by the server on shutdown
    return app
