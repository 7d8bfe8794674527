"""Ray Serve: the same OpenAI app in N replicas behind one address, on one machine or across a Ray cluster.

    pip install -e ".[ray]"
    hf-simplegpt serve MODEL_DIR --ray --replicas 2 --port 8000

Each replica is a Ray actor that builds the app of `hf-simplegpt serve` (`build_app`) and serves it as its ASGI
ingress, so the routes, checks and streaming are the same. Ray's proxy spreads requests over the replicas and lets
each one hold up to `MAX_ONGOING_REQUESTS` at a time; inside a replica those requests are batched by transformers'
continuous batching, token step by token step. That is request batching at its finest grain: Ray's `@serve.batch`
would batch whole requests instead, holding every reply of a batch until its longest one is done.

On a cluster (`ray start --head` on one machine, `ray start --address HEAD:6379` on the others), run the command on
the head node: replicas are placed where there is room (one GPU each when the cluster has GPUs), and MODEL_DIR must
be readable at the same path on every node.
"""

from __future__ import annotations

import logging

import torch
from ray import serve

from hf_simplegpt.serving.app import ServeOptions, build_app

logger = logging.getLogger(__name__)

APP_NAME = "hf-simplegpt"
# Requests Ray routes to one replica at once; continuous batching decodes them together.
MAX_ONGOING_REQUESTS = 64


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS)
@serve.ingress()
class OpenAIReplica:
    """One replica: the OpenAI app of `build_app(model_dir, options)`, model loaded when the replica starts."""

    def __init__(self, model_dir: str, options: ServeOptions):
        self.openai_app = build_app(model_dir, options)  # not `app`: a property of Ray's ingress class

    def __serve_build_asgi_app__(self):
        return self.openai_app

    def __del__(self):
        self.openai_app.state.generation_state.shutdown()


def openai_deployment(model_dir: str, options: ServeOptions, replicas: int):
    """The Ray Serve application: `replicas` replicas of the OpenAI app, one CPU (or GPU) each."""
    resources = {"num_cpus": 1, "num_gpus": 1 if torch.cuda.is_available() else 0}
    return OpenAIReplica.options(num_replicas=replicas, ray_actor_options=resources).bind(model_dir, options)


def start(model_dir: str, options: ServeOptions, host: str, port: int, replicas: int):
    """Start Ray (or join the cluster `RAY_ADDRESS` names) and deploy; returns once every replica is up."""
    import ray

    ray.init(include_dashboard=False, ignore_reinit_error=True, logging_level=logging.WARNING)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(openai_deployment(model_dir, options, replicas), name=APP_NAME, route_prefix="/")


def stop() -> None:
    import ray

    serve.shutdown()
    ray.shutdown()


def serve_with_ray(model_dir: str, options: ServeOptions, host: str, port: int, replicas: int) -> None:
    """`hf-simplegpt serve --ray`: deploy, serve until Ctrl+C or SIGTERM, then take the replicas and Ray down."""
    import signal
    import time

    on_sigterm = signal.getsignal(signal.SIGTERM)
    start(model_dir, options, host, port, replicas)
    signal.signal(signal.SIGTERM, on_sigterm)  # ray.init replaces it with a handler that only dumps a stack trace
    logger.warning("Ray Serve: %d replica(s) of %s at http://%s:%d/v1", replicas, model_dir, host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
