"""`hf-simplegpt serve MODEL_DIR`: an OpenAI-compatible server for a model or LoRA adapter folder.

    hf-simplegpt serve outputs/sft-lora --port 8000             # /v1/chat/completions, /v1/completions, /v1/models
    hf-simplegpt serve outputs/sft-lora --chat                  # and a chat page at http://127.0.0.1:8000/chat
    hf-simplegpt serve outputs/sft-lora --ray --replicas 2      # Ray Serve: 2 replicas behind one address
    hf-simplegpt serve outputs/encoder                          # a sentence encoder: /v1/embeddings (embeddings.py)

It is transformers' own serving app (`transformers serve`) with continuous batching on, configured for SimpleGPT
(see hf_simplegpt/serving/app.py for what is added and why). The model name clients send is MODEL_DIR as given.
Ctrl+C (SIGINT) or SIGTERM finishes the requests in flight, stops the batching thread and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
from contextlib import asynccontextmanager
from dataclasses import fields

from hf_simplegpt.contrastive import is_encoder_folder
from hf_simplegpt.serving.app import ServeOptions, build_app, check_model_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model folder, or a LoRA adapter folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no_continuous_batching", dest="continuous_batching", action="store_false",
                        help="decode every request with generate, one at a time")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", help="auto (the folder's), float32, bfloat16, float16")
    parser.add_argument("--attn_implementation", default=None, help="sdpa, eager, flash_attention_2, ...")
    parser.add_argument("--cb_num_blocks", type=int, default=None,
                        help="paged-cache blocks (256 tokens each); default on a CPU: 32 full-context sequences, "
                        "on a GPU: sized from free memory")  # fmt: skip
    parser.add_argument("--cb_max_batch_tokens", type=int, default=None,
                        help="tokens per continuous-batching step; default on a CPU: 512")  # fmt: skip
    parser.add_argument("--chat", action="store_true", help="also serve a chat page (gradio) at /chat")
    parser.add_argument("--ray", action="store_true", help="serve with Ray Serve (pip install -e '.[ray]')")
    parser.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas of the model (with --ray)")
    parser.add_argument("--log_level", default="warning", help="transformers' log level: info, warning, error")
    return parser


def options_from(args: argparse.Namespace) -> ServeOptions:
    """The ServeOptions of the flags of the same names."""
    return ServeOptions(**{field.name: getattr(args, field.name) for field in fields(ServeOptions)})


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
        raise ValueError("--chat serves the page from the server's own process; with --ray run the page beside it: "
                         f"hf-simplegpt chat-ui --base_url {local_base_url(args.host, args.port)}")  # fmt: skip
    check_model_dir(args.model_dir)
    embeddings = is_encoder_folder(args.model_dir)  # a sentence encoder answers /v1/embeddings instead of generating
    if embeddings and (args.ray or args.chat):
        raise ValueError(f"{args.model_dir} is a sentence encoder: it is served for /v1/embeddings alone, without "
                         "--ray or --chat.")  # fmt: skip
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
    else:
        app = build_app(args.model_dir, options_from(args))
        stop_generation_on_shutdown(app)
    if args.chat:
        from hf_simplegpt.serving.chat_page import mount_chat_page

        mount_chat_page(app, local_base_url(args.host, args.port), model=args.model_dir)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="info"))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl+C again after its graceful shutdown
        pass
