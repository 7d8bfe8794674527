"""`hf-simplegpt serve ENCODER_DIR`: OpenAI's /v1/embeddings for a sentence-transformers folder, through the openai
client, on 127.0.0.1."""

import signal

import numpy as np
import pytest

from hf_simplegpt import contrastive
from tests.serving.conftest import save_tiny_model, start_server

TEXTS = ["First Citizen: we are accounted poor citizens.", "The patricians good.", "What authority surfeits on"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("embeddings")
    base = save_tiny_model(root / "base")
    folder = root / "encoder"
    contrastive.build_encoder(str(base), "last-token", "bidirectional", device="cpu").save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def served(encoder_dir, tmp_path_factory):
    server = start_server(encoder_dir, tmp_path_factory.mktemp("logs") / "embeddings.log")
    yield server
    assert server.stop(signal.SIGTERM) == 0, server.output()[-3000:]


@pytest.fixture(scope="module")
def client(served):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=served.base_url, api_key="unused", timeout=60, max_retries=0)


def test_embeddings_equal_encode(client, served, encoder_dir):
    expected = contrastive.load_encoder(str(encoder_dir), device="cpu").encode(TEXTS)
    for encoding_format in ("base64", "float"):  # the openai client asks for base64 unless told
        kwargs = {} if encoding_format == "base64" else {"encoding_format": "float"}
        reply = client.embeddings.create(model=served.model, input=TEXTS, **kwargs)
        got = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert reply.model == served.model and reply.usage.prompt_tokens > len(TEXTS)
    one = client.embeddings.create(model=served.model, input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-5)
    short = client.embeddings.create(model=served.model, input=TEXTS, dimensions=8, encoding_format="float")
    shortened = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose([d.embedding for d in short.data], shortened, atol=1e-5)
    assert [m.id for m in client.models.list().data] == [served.model]


@pytest.mark.parametrize(
    "body, says",
    [
        ({"input": ""}, "input[0] is empty"),
        ({"input": [[1, 2, 3]]}, "send strings, not token ids"),
        ({"input": ["a"], "dimensions": 10_000}, "'dimensions' 10000"),
    ],
)
def test_bad_requests_get_a_400_naming_the_problem(client, served, body, says):
    import openai

    with pytest.raises(openai.BadRequestError) as error:
        client.embeddings.create(model=served.model, **body)
    assert says in str(error.value)
    assert client.embeddings.create(model=served.model, input="still serving").data  # and the server goes on
