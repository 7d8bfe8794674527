"""OpenAI's `/v1/embeddings` for an encoder folder (a sentence-transformers folder, `hf-simplegpt contrastive`).

    hf-simplegpt serve outputs/encoder --port 8000          # /v1/embeddings, /v1/models, /health

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    vectors = [d.embedding for d in client.embeddings.create(model="outputs/encoder", input=["a", "b"]).data]

Each vector is exactly `SentenceTransformer(folder).encode(text)`: L2-normalised, in the folder's pooling and
attention. `encoding_format` "float" or "base64" (little-endian float32, what the `openai` client asks for by
default); `dimensions` keeps the first N dimensions and normalises them again (Matryoshka-style truncation). Text
only: token-id arrays are refused, since a client's token ids would be another tokenizer's.
"""

from __future__ import annotations

import base64
import time

import numpy as np

from hf_simplegpt.contrastive import load_encoder


def check_embeddings_request(body: dict, dimension: int) -> list[str]:
    """The texts of an embeddings request, or a 400 naming the first problem."""
    from fastapi import HTTPException

    def bad(message: str):
        return HTTPException(status_code=400, detail=message)

    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts:
        raise bad("'input' must be a string or a non-empty list of strings.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad(f"input[{i}] is {type(text).__name__}: this server embeds text; send strings, not token ids.")
        if not text.strip():
            raise bad(f"input[{i}] is empty: every input must hold some text.")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise bad(f"'encoding_format' {body['encoding_format']!r}: use float or base64.")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (isinstance(dimensions, int) and 1 <= dimensions <= dimension):
        raise bad(f"'dimensions' {dimensions!r}: pass an integer from 1 to the model's {dimension}.")
    return texts


def build_embeddings_app(model_dir: str, device: str = "auto"):
    """A FastAPI app serving the encoder at `model_dir` under the model name `model_dir`; loads it at once."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from hf_simplegpt.serving.app import openai_errors

    encoder = load_encoder(model_dir, device=None if device == "auto" else device)
    dimension = encoder.get_embedding_dimension()
    created = int(time.time())
    app = FastAPI(title=f"hf-simplegpt embeddings: {model_dir}")
    openai_errors(app)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {
            "object": "list",
            "data": [{"id": model_dir, "object": "model", "created": created, "owned_by": "hf_simplegpt"}],
        }

    @app.post("/v1/embeddings")
    async def embeddings(body: dict):
        texts = check_embeddings_request(body, dimension)
        vectors = await run_in_threadpool(encoder.encode, texts, convert_to_numpy=True, normalize_embeddings=True)
        vectors = vectors.astype(np.float32)
        if body.get("dimensions"):
            vectors = vectors[:, : body["dimensions"]]
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        tokens = sum(
            len(ids)
            for ids in encoder.tokenizer(texts, truncation=True, max_length=encoder.max_seq_length)["input_ids"]
        )
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v.tolist(),
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", model_dir),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app
