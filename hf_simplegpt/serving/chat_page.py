"""A chat page (gradio `ChatInterface`) for any OpenAI-compatible server: `hf-simplegpt chat-ui`, or `/chat` of
`hf-simplegpt serve --chat`.

    hf-simplegpt chat-ui --base_url http://127.0.0.1:8000/v1 [--model NAME] [--port 7860]

The page keeps the conversation and sends all of it with each message to `/v1/chat/completions`, streaming the reply
into the page as it is generated. It talks only to the OpenAI endpoint, so `transformers serve`, vLLM or SGLang work
behind it as well as `hf-simplegpt serve`. A refused request (say, a conversation longer than the model's context)
shows the server's message in the page.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

DEFAULT_MAX_TOKENS = 128


def message_text(content) -> str:
    """The text of a chat message's content: a string, or gradio's / OpenAI's list of content parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list | tuple) else [content]
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in parts)


def stream_reply(
    client,
    model: str,
    message: str,
    history: list[dict],
    max_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
) -> Iterator[str]:
    """The reply to `message` after `history` (gradio's [{"role", "content"}]), as the growing text after each
    streamed chunk. `temperature`/`top_p` None: the server decodes as the model's generation_config says; top_p is
    sent only with a temperature above 0 (OpenAI's API reads top_p < 1 as sampling)."""
    messages = [{"role": turn["role"], "content": message_text(turn["content"])} for turn in history]
    messages.append({"role": "user", "content": message})
    sampling = {} if temperature is None else {"temperature": float(temperature)}
    if top_p is not None and sampling.get("temperature", 1.0) > 0:
        sampling["top_p"] = float(top_p)
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=int(max_tokens), stream=True, **sampling
    )
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            yield text


def sampling_defaults(model: str | None) -> dict[str, float]:
    """The page's starting temperature and top_p: those of `model`'s generation_config.json when `model` is a local
    folder (temperature 0 for a greedy one), else the project's `SAMPLING_DEFAULTS`, which pretraining saves."""
    from transformers import GenerationConfig

    from ..generation import SAMPLING_DEFAULTS

    config = None
    if model and os.path.isfile(os.path.join(model, "generation_config.json")):
        config = GenerationConfig.from_pretrained(model)
    if config is None:
        return {"temperature": SAMPLING_DEFAULTS["temperature"], "top_p": SAMPLING_DEFAULTS["top_p"]}
    if not config.do_sample:
        return {"temperature": 0.0, "top_p": 1.0}
    return {"temperature": float(config.temperature or 1.0), "top_p": float(config.top_p or 1.0)}


def build_chat_page(base_url: str, model: str | None = None, title: str | None = None):
    """A gradio `ChatInterface` that chats with `model` (default: the first the server lists) at `base_url`, starting
    from the model folder's own sampling settings (`sampling_defaults`)."""
    import gradio as gr
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none")  # local servers take any key
    defaults, from_folder = sampling_defaults(model), bool(model) and os.path.isdir(model)

    def respond(message: str, history: list[dict], max_tokens: int, temperature: float, top_p: float):
        if from_folder and {"temperature": temperature, "top_p": top_p} == defaults:
            # The folder's own decoding: sent as nothing, so the server may batch the request with others.
            temperature = top_p = None
        try:
            name = model or client.models.list().data[0].id
            yield from stream_reply(client, name, message, history, max_tokens, temperature, top_p)
        except openai.APIStatusError as error:  # show the server's reason (a 4xx names the problem) in the page
            raise gr.Error(f"The server refused the request ({error.status_code}): {error.message}") from error
        except openai.APIConnectionError as error:
            raise gr.Error(f"No server answers at {base_url}: {error}") from error

    return gr.ChatInterface(
        respond,
        title=title or f"Chat with {model or 'the served model'}",
        description=f"Replies stream from the OpenAI-compatible endpoint {base_url}.",
        additional_inputs=[
            gr.Slider(1, 1024, value=DEFAULT_MAX_TOKENS, step=1, label="max_tokens"),
            gr.Slider(0.0, 2.0, value=defaults["temperature"], step=0.05, label="temperature (0: greedy)"),
            gr.Slider(0.05, 1.0, value=defaults["top_p"], step=0.05, label="top_p"),
        ],
        analytics_enabled=False,
    )


def mount_chat_page(app, base_url: str, model: str, path: str = "/chat"):
    """Serve the chat page at `path` of `app` (the server's own FastAPI app)."""
    import gradio as gr

    return gr.mount_gradio_app(app, build_chat_page(base_url, model), path=path)


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_url", default="http://127.0.0.1:8000/v1", help="the server's OpenAI base URL")
    parser.add_argument("--model", default=None, help="model name to request; default: the first the server lists")
    parser.add_argument("--host", default="127.0.0.1", help="address the page listens on")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    page = build_chat_page(args.base_url, args.model)
    page.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True)
    page.block_thread()  # until Ctrl+C
    return page
