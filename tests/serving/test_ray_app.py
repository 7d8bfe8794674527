"""hf_simplegpt.serving.ray_app: two Ray Serve replicas of the OpenAI app on 127.0.0.1, under a bounded load of 8
concurrent clients. Skipped without Ray (pip install -e ".[ray]"). Costs about a minute: Ray starts its own
processes, and each replica loads the model."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from hf_simplegpt.serving.app import ServeOptions
from tests.serving.conftest import free_port

pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -e '.[ray]'")


def test_two_replicas_serve_the_openai_routes_under_concurrent_load(served_dir, monkeypatch):
    import openai
    from ray import serve

    from hf_simplegpt.serving import ray_app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the replicas (see tests/serving/conftest.py)
    port = free_port()
    ray_app.start(str(served_dir), ServeOptions(), host="127.0.0.1", port=port, replicas=2)
    try:
        deployment = serve.status().applications[ray_app.APP_NAME].deployments["OpenAIReplica"]
        assert deployment.replica_states == {"RUNNING": 2}
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=60, max_retries=0)
        assert [model.id for model in client.models.list().data] == [str(served_dir)]
        messages = [[{"role": "user", "content": f"Tell me story number {i}."}] for i in range(8)]

        def ask(conversation):
            return client.chat.completions.create(model=str(served_dir), messages=conversation, max_tokens=32)

        alone = ask(messages[0]).choices[0].message.content
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(ask, messages))
        assert replies[0].choices[0].message.content == alone  # whichever replica answered, batched with others
        assert all(r.usage.completion_tokens > 0 and r.choices[0].message.content for r in replies)
        with pytest.raises(openai.BadRequestError, match="`max_tokens` must be a positive integer"):
            client.chat.completions.create(model=str(served_dir), messages=messages[0], max_tokens=0)
    finally:
        ray_app.stop()
