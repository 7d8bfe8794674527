"""One `hf-simplegpt serve` process shared by the serving tests, on 127.0.0.1, serving a tiny SimpleGPT folder."""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer
from tests.conftest import TINY_CORPUS, tiny_config_kwargs

CONTEXT = 256  # room for a two-turn chat of 128-token replies (the page's default) and the throughput test
STARTUP_TIMEOUT = 120
# One intra-op thread: a 32-wide model gains nothing from more, and on a shared 2-core machine OpenMP threads that
# spin-wait for each other make every step 10x slower (measured: ~25 vs ~500 tokens/s under load).
SERVER_ENV = {
    "OMP_NUM_THREADS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(folder: Path) -> Path:
    """A seeded random 2-layer SimpleGPT with a 256-position context, its tokenizer and chat template."""
    tokenizer = train_tokenizer(TINY_CORPUS, vocab_size=300, model_max_length=CONTEXT)
    torch.manual_seed(0)
    config = SimpleGPTConfig(**tiny_config_kwargs(max_position_embeddings=CONTEXT, **special_token_ids(tokenizer)))
    SimpleGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@dataclass
class Server:
    process: subprocess.Popen
    model: str  # the model name clients send: the folder as given on the command line
    base_url: str  # OpenAI base URL
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_server(model_dir: Path, log: Path, *flags: str) -> Server:
    """`hf-simplegpt serve MODEL_DIR --port P ...` in the background; returns once /health answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "hf_simplegpt", "serve", str(model_dir), "--port", str(port), *flags]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **SERVER_ENV})
    server = Server(process, str(model_dir), f"http://127.0.0.1:{port}/v1", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hf-simplegpt serve exited with {process.returncode}:\n{server.output()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"hf-simplegpt serve did not answer within {STARTUP_TIMEOUT}s:\n{server.output()[-3000:]}")


def has_gradio() -> bool:
    return importlib.util.find_spec("gradio") is not None


@pytest.fixture(scope="session")
def served_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("served") / "tiny-simplegpt")


@pytest.fixture(scope="session")
def server(served_dir, tmp_path_factory):
    """The shared server (with the chat page when gradio is installed). Stopping it with SIGTERM must finish
    cleanly: status 0 after transformers' shutdown and ours (the batching thread stopped)."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = start_server(served_dir, log, *(["--chat"] if has_gradio() else []))
    yield server
    assert server.stop(signal.SIGTERM) == 0, server.output()[-3000:]
    assert "Stopped generation; shutting down." in server.output()
    assert "Application shutdown complete." in server.output()


@pytest.fixture(scope="session")
def client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.base_url, api_key="unused", timeout=60, max_retries=0)
