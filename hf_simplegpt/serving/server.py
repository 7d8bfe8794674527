"""`hf-simplegpt serve MODEL_DIR`: an OpenAI-compatible server for a model or LoRA adapter folder.

    hf-simplegpt serve outputs/sft-lora --port 8000             # /v1/chat/completions, /v1/completions, /v1/models
    hf-simplegpt serve outputs/sft-lora --chat                  # and a chat page at http://127.0.0.1:8000/chat
    hf-simplegpt serve outputs/sft-lora --ray --replicas 2      # Ray Serve: 2 replicas behind one address
    hf-simplegpt serve outputs/encoder                          # a sentence encoder: /v1/embeddings (embeddings.py)

It is transformers' own serving app (`transformers serve`) with continuous batching on, configured for SimpleGPT
(see hf_simplegpt/serving/app.py for what is added and why). The model name clients send is MODEL_DIR as given.
Ctrl+C (SIGINT) or SIGTERM finishes the requests in flight (waiting GRACEFUL_SHUTDOWN_S at most), stops the batching
thread and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from contextlib import asynccontextmanager
from dataclasses import fields

from hf_simplegpt.contrastive import is_encoder_folder
from hf_simplegpt.serving.app import GRACEFUL_SHUTDOWN_S, Guard, ServeOptions, build_app, check_model_dir
from hf_simplegpt.serving.checks import Limits

API_KEY_ENV = "HF_SIMPLEGPT_API_KEY"

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model folder, or a LoRA adapter folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--no_continuous_batching",
        dest="continuous_batching",
        action="store_false",
        help="decode every request with generate, one at a time",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", help="auto (the folder's), float32, bfloat16, float16")
    parser.add_argument("--attn_implementation", default=None, help="sdpa, eager, flash_attention_2, ...")
    parser.add_argument(
        "--cb_num_blocks",
        type=int,
        default=None,
        help="paged-cache blocks (--cb_page_size tokens each); default on a CPU: 32 full-context "
        "sequences, on a GPU: sized from free memory",
    )
    parser.add_argument(
        "--cb_page_size",
        type=int,
        default=32,
        help="tokens per paged-cache block; prompts share a cached prefix in whole blocks",
    )
    parser.add_argument(
        "--cb_max_batch_tokens",
        type=int,
        default=None,
        help="tokens per continuous-batching step; default on a CPU: 512",
    )
    parser.add_argument("--chat", action="store_true", help="also serve a chat page (gradio) at /chat")
    parser.add_argument("--ray", action="store_true", help="serve with Ray Serve (pip install -e '.[ray]')")
    parser.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas of the model (with --ray)")
    parser.add_argument(
        "--no_prefix_cache",
        dest="prefix_cache",
        action="store_false",
        help="recompute every prompt (by default a prompt prefix already in the cache is reused)",
    )
    parser.add_argument(
        "--api_key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require `Authorization: Bearer KEY` on every route but /health (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--allow_model_dir",
        default=None,
        metavar="DIR",
        help="turn on /load_model and /reset, and let requests name model folders, under DIR only",
    )
    limits = Limits()
    parser.add_argument("--max_body_bytes", type=int, default=limits.max_body_bytes, help="largest request body")
    parser.add_argument("--max_prompt_tokens", type=int, default=None, help="longest prompt (default: the context)")
    parser.add_argument(
        "--max_stop_strings", type=int, default=limits.max_stop_strings, help="stop strings a request may send"
    )
    parser.add_argument("--max_stop_chars", type=int, default=limits.max_stop_chars, help="characters per stop string")
    parser.add_argument("--log_level", default="warning", help="transformers' log level: info, warning, error")
    return parser


def options_from(args: argparse.Namespace) -> ServeOptions:
    """The ServeOptions (and their Limits) of the flags of the same names."""
    limits = Limits(**{field.name: getattr(args, field.name) for field in fields(Limits) if hasattr(args, field.name)})
    names = [field.name for field in fields(ServeOptions) if field.name not in ("limits", "open_paths")]
    open_paths = ("/chat",) if getattr(args, "chat", False) else ()
    return ServeOptions(limits=limits, open_paths=open_paths, **{name: getattr(args, name) for name in names})


def stop_generation_on_shutdown(app) -> None:
    """Stop the continuous-batching thread when the server shuts down, after transformers' own shutdown (which
    unloads the model)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app):
        async with inner(app) as state:
            try:
                yield state
            finally:
                app.state.generation_state.shutdown()
                logger.warning("Stopped generation; shutting down.")

    app.router.lifespan_context = lifespan


def local_base_url(host: str, port: int) -> str:
    """The OpenAI base URL a process on this machine reaches the server at."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}/v1"


def _exit_cleanly(signum, frame):
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.replicas < 1:
        raise ValueError(f"--replicas {args.replicas}: pass 1 or more.")
    if args.replicas > 1 and not args.ray:
        raise ValueError(f"--replicas {args.replicas} needs --ray (one process serves one replica).")
    if args.ray and args.chat:
        raise ValueError(
            "--chat serves the page from the server's own process; with --ray run the page beside it: "
            f"hf-simplegpt chat-ui --base_url {local_base_url(args.host, args.port)}"
        )
    if args.api_key is not None and args.chat:
        raise ValueError(
            "--chat serves a page without a key; with --api_key run the page beside the server: "
            f"hf-simplegpt chat-ui --base_url {local_base_url(args.host, args.port)}"
        )
    for name in ("max_body_bytes", "max_stop_strings", "max_stop_chars", "max_prompt_tokens", "cb_page_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: pass 1 or more.")
    check_model_dir(args.model_dir)
    embeddings = is_encoder_folder(args.model_dir)  # a sentence encoder answers /v1/embeddings instead of generating
    if embeddings and (args.ray or args.chat):
        raise ValueError(
            f"{args.model_dir} is a sentence encoder: it is served for /v1/embeddings alone, without --ray or --chat."
        )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again: exit 0 rather than die of it.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    if args.ray:
        try:
            from hf_simplegpt.serving.ray_app import serve_with_ray
        except ModuleNotFoundError as error:
            raise SystemExit(f"--ray needs Ray Serve ({error}): pip install -e '.[ray]'") from error

        serve_with_ray(args.model_dir, options_from(args), host=args.host, port=args.port, replicas=args.replicas)
        return
    import uvicorn

    if embeddings:
        from hf_simplegpt.serving.embeddings import build_embeddings_app

        app = build_embeddings_app(args.model_dir, args.device)
        app.add_middleware(Guard, api_key=args.api_key, max_body_bytes=args.max_body_bytes)  # as build_app's routes
    else:
        app = build_app(args.model_dir, options_from(args))
        stop_generation_on_shutdown(app)
    if args.chat:
        from hf_simplegpt.serving.chat_page import mount_chat_page

        mount_chat_page(app, local_base_url(args.host, args.port), model=args.model_dir)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl+C again after its graceful shutdown
        pass
