"""What a request to `hf-simplegpt serve` may ask for, checked before any work: every malformed or unsupported field is
a 400 that names it (never a 500, never silently ignored), and every limit is a 4xx that names the limit.

`check_request(body, route, limits)` is called first by each handler; `Limits` holds the limits a server enforces.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

# The fields each route implements; any other field is refused by name (OpenAI clients that send `tools` or
# `response_format` must learn they were not honoured).
COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "generation_config",
    "logprobs",
    "user",
}
ROUTE_FIELDS = {
    "chat": COMMON_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "chat_template_kwargs"},
    "completions": COMMON_FIELDS | {"prompt", "echo", "suffix", "best_of"},
    "responses": {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "seed",
        "user",
    },
}
# The `generation_config` keys a request may set: those continuous batching decodes per request. Beam search,
# several sequences, contrastive search... would make one request cost many (or fall back to `generate`).
GENERATION_CONFIG_KEYS = {"max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty"}
# chat_template_kwargs that apply_chat_template itself takes: a request must not set these.
RESERVED_TEMPLATE_KWARGS = {
    "conversation",
    "add_generation_prompt",
    "tools",
    "documents",
    "return_tensors",
    "return_dict",
    "tokenize",
    "tokenizer_kwargs",
    "continue_final_message",
    "return_assistant_tokens_mask",
    "chat_template",
    "padding",
    "truncation",
    "max_length",
    "load_audio_from_video",
    "processor_kwargs",
}
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
MAX_SEED = 2**63  # torch generators take seeds below 2**64; OpenAI documents int64


@dataclass
class Limits:
    """What one request may ask of the server (`hf-simplegpt serve --max_...` flags)."""

    max_body_bytes: int = 1_000_000  # a body larger than this is refused (413) before it is parsed
    max_stop_strings: int = 16
    max_stop_chars: int = 256  # per stop string
    max_prompt_tokens: int | None = None  # None: the model's context (a prompt must leave room for one token)
    max_logit_bias: int = 300  # entries in logit_bias (OpenAI's limit)


class RequestError(ValueError):
    """A request the server refuses, with the HTTP status (400 by default) and a message naming the problem."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_in(body: dict, field: str, low: float, high: float, name: str | None = None) -> None:
    value = body.get(field)
    if value is not None and (not is_number(value) or not low <= value <= high):
        raise RequestError(f"`{name or field}` must be a number in [{low}, {high}], got {value!r}.")


def token_prompt(prompt) -> list[int] | None:
    """The token ids of a token-id prompt (`[47, 76]` or `[[47, 76]]`), or None for a text prompt."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(is_int(token) for token in prompt):
        return prompt
    return None


def check_prompt(body: dict, vocab_size: int | None) -> None:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError("`prompt` is an empty string: send some text (or token ids) to continue.")
        return
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):  # ["text"]: one text prompt
        body["prompt"] = prompt[0]
        return check_prompt(body, vocab_size)
    ids = token_prompt(prompt)
    if ids is None:
        if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str | list) for p in prompt):
            raise RequestError(
                f"`prompt` holds {len(prompt)} prompts: this server answers one prompt per request; "
                "send them as separate requests."
            )
        raise RequestError(
            "`prompt` is required: a non-empty string, a list of token ids, or a list holding one "
            f"of those; got {str(prompt)[:80]!r}."
        )
    bad = [token for token in ids if token < 0 or (vocab_size is not None and token >= vocab_size)]
    if bad:
        raise RequestError(f"`prompt` token id {bad[0]} is outside the vocabulary [0, {vocab_size}).")


def check_messages(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError('`messages` is required: a non-empty list of {"role": ..., "content": ...}.')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string `role`, got {str(message)[:80]!r}.")
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise RequestError(
                        f'messages[{i}].content: only text parts ({{"type": "text", "text": '
                        f"...}}) are supported, got {str(part)[:80]!r}."
                    )
        elif not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts.")
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
            raise RequestError(f"`chat_template_kwargs` must be an object of named values, got {str(kwargs)[:80]!r}.")
        reserved = sorted(set(kwargs) & RESERVED_TEMPLATE_KWARGS)
        if reserved:
            raise RequestError(f"`chat_template_kwargs` may not set {reserved}: the server sets them itself.")


def check_generation_config(body: dict) -> None:
    raw = body.get("generation_config")
    if raw is None:
        return
    try:
        config = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as error:
        raise RequestError(f"`generation_config` is not valid JSON: {error}.") from error
    if not isinstance(config, dict):
        raise RequestError(f"`generation_config` must be a JSON object, got {str(raw)[:80]!r}.")
    # Clients such as `transformers chat` send a whole GenerationConfig: keys left at their defaults change nothing.
    from transformers import GenerationConfig

    defaults = GenerationConfig().to_dict()
    refused = sorted(
        key
        for key in set(config) - GENERATION_CONFIG_KEYS - {"transformers_version"}
        if key not in defaults or config[key] != defaults[key]
    )
    if refused:
        raise RequestError(
            f"`generation_config` may not set {refused}: a request may override only "
            f"{sorted(GENERATION_CONFIG_KEYS)} (each request is decoded in the shared batch, one "
            "sequence by greedy search or sampling)."
        )
    if "max_new_tokens" in config and (not is_int(config["max_new_tokens"]) or config["max_new_tokens"] < 1):
        raise RequestError(
            f"`generation_config.max_new_tokens` must be a positive integer, got {config['max_new_tokens']!r}."
        )
    if "do_sample" in config and not isinstance(config["do_sample"], bool):
        raise RequestError(f"`generation_config.do_sample` must be true or false, got {config['do_sample']!r}.")
    _number_in(config, "temperature", 0, 100, "generation_config.temperature")
    _number_in(config, "repetition_penalty", 0.01, 100, "generation_config.repetition_penalty")
    if "top_p" in config and (not is_number(config["top_p"]) or not 0 < config["top_p"] <= 1):
        raise RequestError(f"`generation_config.top_p` must be a number in (0, 1], got {config['top_p']!r}.")
    if "top_k" in config and (not is_int(config["top_k"]) or config["top_k"] < 0):
        raise RequestError(f"`generation_config.top_k` must be an integer >= 0, got {config['top_k']!r}.")
    body["generation_config"] = json.dumps(config)


def check_request(body, route: str, limits: Limits, vocab_size: int | None = None) -> None:
    """Raise a RequestError naming the first problem of an OpenAI request body for `route` ("chat", "completions"
    or "responses")."""
    if not isinstance(body, dict):
        raise RequestError(f"The request body must be a JSON object, got {type(body).__name__}.")
    unsupported = sorted(set(body) - ROUTE_FIELDS[route])
    if unsupported:
        raise RequestError(
            f"Unsupported field(s) {unsupported}: this server does not implement them, so it refuses "
            "rather than ignore them. Remove them from the request."
        )
    if route == "chat":
        check_messages(body)
    elif route == "completions":
        check_prompt(body, vocab_size)
    else:
        check_responses_input(body)
    if not isinstance(body.get("model", ""), str):
        raise RequestError(f"`model` must be a string, got {body['model']!r}.")
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(field)
        if value == 0 and field == "max_tokens" and route == "completions" and body.get("echo") is True:
            continue  # OpenAI's echo-only request: the prompt (and its logprobs) back, nothing generated
        if value is not None and (not is_int(value) or value < 1):
            raise RequestError(
                f"`{field}` must be a positive integer, got {value!r}"
                + (" (0 only with `echo: true` on completions)." if value == 0 and route == "completions" else ".")
            )
    _number_in(body, "temperature", 0, 2)
    top_p = body.get("top_p")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise RequestError(f"`top_p` must be a number in (0, 1], got {top_p!r}.")
    top_k = body.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
        raise RequestError(f"`top_k` must be an integer >= 0 (0: no top-k), got {top_k!r}.")
    seed = body.get("seed")
    if seed is not None and (not is_int(seed) or not 0 <= seed < MAX_SEED):
        raise RequestError(f"`seed` must be an integer in [0, 2**63), got {str(seed)[:40]}.")
    _number_in(body, "frequency_penalty", -2, 2)
    _number_in(body, "presence_penalty", -2, 2)
    check_logit_bias(body, limits, vocab_size)
    check_stop(body, limits)
    if body.get("n") not in (None, 1):
        raise RequestError(f"`n` = {body['n']!r}: this server returns one choice per request; send n=1 (or no n).")
    if body.get("best_of") not in (None, 1):
        raise RequestError(
            f"`best_of` = {body['best_of']!r}: this server returns the one sequence it decodes; send "
            "best_of=1 (or no best_of)."
        )
    for field in ("stream", "echo"):
        if body.get(field) is not None and not isinstance(body[field], bool):
            raise RequestError(f"`{field}` must be true or false, got {body[field]!r}.")
    options = body.get("stream_options")
    if options is not None:
        if (
            not isinstance(options, dict)
            or set(options) - {"include_usage"}
            or not isinstance(options.get("include_usage", False), bool)
        ):
            raise RequestError(f'`stream_options` must be {{"include_usage": true|false}}, got {str(options)[:80]!r}.')
        if not body.get("stream"):
            raise RequestError("`stream_options` is only allowed with `stream: true`.")
    check_logprobs(body, route)
    if body.get("suffix") is not None and not isinstance(body["suffix"], str):
        raise RequestError(f"`suffix` must be a string, got {str(body['suffix'])[:80]!r}.")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise RequestError(f"`user` must be a string, got {str(body['user'])[:80]!r}.")
    check_generation_config(body)


def check_responses_input(body: dict) -> None:
    value = body.get("input")
    if isinstance(value, str) and value:
        pass
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("role"), str)
                or not isinstance(item.get("content"), str)
            ):
                raise RequestError(f'input[{i}] must be {{"role": ..., "content": "text"}}, got {str(item)[:80]!r}.')
    else:
        raise RequestError('`input` is required: a non-empty string or a list of {"role", "content"} messages.')
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise RequestError("`instructions` must be a string.")


def check_logit_bias(body: dict, limits: Limits, vocab_size: int | None) -> None:
    bias = body.get("logit_bias")
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise RequestError(f"`logit_bias` must be an object of token id -> bias, got {str(bias)[:80]!r}.")
    if len(bias) > limits.max_logit_bias:
        raise RequestError(f"`logit_bias` has {len(bias)} entries; the limit is {limits.max_logit_bias}.")
    for key, value in bias.items():
        if not (isinstance(key, str) and key.isdigit()) or (vocab_size is not None and int(key) >= vocab_size):
            raise RequestError(f"`logit_bias` key {key!r} is not a token id in [0, {vocab_size}).")
        if not is_number(value) or not -100 <= value <= 100:
            raise RequestError(f"`logit_bias[{key}]` must be a number in [-100, 100], got {value!r}.")


def check_stop(body: dict, limits: Limits) -> None:
    stop = body.get("stop")
    if stop is None:
        return
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError(f"`stop` must be a non-empty string or a list of them, got {str(stop)[:80]!r}.")
    if len(stops) > limits.max_stop_strings:
        raise RequestError(
            f"`stop` has {len(stops)} strings; the limit is {limits.max_stop_strings} (--max_stop_strings)."
        )
    longest = max(len(s) for s in stops)
    if longest > limits.max_stop_chars:
        raise RequestError(
            f"a `stop` string has {longest} characters; the limit is {limits.max_stop_chars} (--max_stop_chars)."
        )


def check_logprobs(body: dict, route: str) -> None:
    logprobs = body.get("logprobs")
    if route == "chat":
        if logprobs is not None and not isinstance(logprobs, bool):
            raise RequestError(f"`logprobs` must be true or false on chat completions, got {logprobs!r}.")
        top = body.get("top_logprobs")
        if top is not None:
            if not is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS:
                raise RequestError(f"`top_logprobs` must be an integer in [0, {MAX_TOP_LOGPROBS}], got {top!r}.")
            if not logprobs:
                raise RequestError("`top_logprobs` needs `logprobs: true`.")
    elif route == "completions" and logprobs is not None:
        if not is_int(logprobs) or not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise RequestError(
                f"`logprobs` must be an integer in [0, {MAX_TOP_LOGPROBS}] on completions (the number "
                f"of top log probabilities per token), got {logprobs!r}."
            )
