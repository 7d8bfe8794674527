"""`logprobs` / `top_logprobs` on chat completions, `logprobs` + `echo` on completions, against the shared server:
OpenAI's shapes, streamed equal to non-streamed, and the values those of a direct forward pass of the served model
(the model's own log-softmax, whatever the sampling settings: vLLM's default)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_simplegpt.generation import encode_prompt
from hf_simplegpt.serving.app import ServeOptions, build_app, decode_as_streamed
from tests.serving.test_server import CONVERSATIONS, chat, post

TOL = 1e-4


@pytest.fixture(scope="module")
def local(served_dir):
    return AutoModelForCausalLM.from_pretrained(served_dir).eval(), AutoTokenizer.from_pretrained(served_dir)


def forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits at every position of `ids` [len(ids), V]: row i predicts token i+1."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def sse(server, route: str, body: dict) -> list[dict]:
    status, text = post(server, route, json.dumps({**body, "stream": True}).encode())
    assert status == 200, text
    events = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def ids_by_bytes(tokenizer) -> dict[tuple[int, ...], int]:
    """Each token's own bytes -> its id (byte-level BPE tokens are distinct byte strings)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = tokenizer.get_vocab().items()
    return {tuple(decoder[c] for c in piece): i for piece, i in vocab if set(piece) <= decoder.keys()}


@pytest.mark.parametrize("settings", [{}, {"temperature": 1.0, "seed": 11}], ids=["greedy", "sampled"])
def test_chat_logprobs_are_the_models_log_softmax_streamed_or_not(client, server, local, settings):
    model, tokenizer = local
    messages = CONVERSATIONS[1]
    reply = chat(client, server, messages, max_tokens=12, logprobs=True, top_logprobs=5, **settings)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens and content
    by_bytes = ids_by_bytes(tokenizer)
    ids = [by_bytes[tuple(entry.bytes)] for entry in content]  # the bytes name each token exactly
    assert [entry.token for entry in content] == [tokenizer.decode([i]) for i in ids]
    prompt = encode_prompt(tokenizer, messages)
    reference = forward_logprobs(model, prompt + ids)
    for j, (entry, token) in enumerate(zip(content, ids)):
        row = reference[len(prompt) - 1 + j]  # the raw distribution, whatever the temperature
        assert entry.logprob == pytest.approx(row[token].item(), abs=TOL)
        values, best = row.topk(5)
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx(values.tolist(), abs=TOL)
        assert [by_bytes[tuple(top.bytes)] for top in entry.top_logprobs] == best.tolist()
        if not settings:  # greedy: the chosen token is the most likely one
            assert entry.top_logprobs[0].bytes == entry.bytes
    body = {"model": server.model, "messages": messages, "max_tokens": 12, "logprobs": True, "top_logprobs": 5}
    chunks = sse(server, "chat/completions", {**body, **settings})
    streamed = [e for chunk in chunks for e in ((chunk["choices"][0].get("logprobs") or {}).get("content") or [])]
    assert [e["bytes"] for e in streamed] == [e.bytes for e in content]
    assert [e["logprob"] for e in streamed] == pytest.approx([e.logprob for e in content], abs=TOL)
    # Without top_logprobs each entry has an empty list, as OpenAI sends it.
    bare = chat(client, server, messages, max_tokens=3, logprobs=True).choices[0].logprobs.content
    assert [entry.top_logprobs for entry in bare] == [[], [], []]


def test_completions_echo_gives_the_prompts_logprobs_as_a_direct_forward(server, local):
    model, tokenizer = local
    prompt = "The quick brown fox jumps"
    body = {"model": server.model, "prompt": prompt, "max_tokens": 4, "logprobs": 3, "echo": True}
    status, text = post(server, "completions", json.dumps(body).encode())
    assert status == 200, text
    choice = json.loads(text)["choices"][0]
    logprobs = choice["logprobs"]
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert choice["text"].startswith(prompt) and len(logprobs["tokens"]) == len(prompt_ids) + 4
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    ids = model.generate(torch.tensor([prompt_ids]), max_new_tokens=4, do_sample=False)[0].tolist()  # greedy
    assert choice["text"] == prompt + decode_as_streamed(tokenizer, ids[len(prompt_ids) :])
    assert logprobs["tokens"] == [tokenizer.decode([i]) for i in ids]  # each token decoded alone
    assert logprobs["text_offset"] == [sum(map(len, logprobs["tokens"][:i])) for i in range(len(ids))]
    reference = forward_logprobs(model, ids)
    for i in range(1, len(ids)):
        row = reference[i - 1]
        assert logprobs["token_logprobs"][i] == pytest.approx(row[ids[i]].item(), abs=TOL)
        top = logprobs["top_logprobs"][i]
        values, best = row.topk(3)
        expected = {}
        for b, v in [*zip(best.tolist(), values.tolist()), (ids[i], row[ids[i]].item())]:  # the chosen one too
            expected.setdefault(tokenizer.decode([b]), v)
        assert top.keys() == expected.keys() and list(top.values()) == pytest.approx(list(expected.values()), abs=TOL)
        assert list(top.values())[:3] == sorted(list(top.values())[:3], reverse=True)
        if i >= len(prompt_ids):  # greedy: the generated token is the best one
            assert logprobs["token_logprobs"][i] == pytest.approx(values[0].item(), abs=TOL)
    chunks = sse(server, "completions", body)
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == choice["text"]
    joined = {key: [] for key in logprobs}
    for chunk in chunks:
        for key, values in (chunk["choices"][0].get("logprobs") or {}).items():
            joined[key] += values
    assert joined["tokens"] == logprobs["tokens"] and joined["text_offset"] == logprobs["text_offset"]
    assert joined["token_logprobs"][1:] == pytest.approx(logprobs["token_logprobs"][1:], abs=TOL)


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_max_tokens_0_scores_a_token_id_prompt_as_lm_eval_sends_it(server, local, stream):
    model, tokenizer = local
    ids = tokenizer("A journey of a thousand miles")["input_ids"]
    body = {"model": server.model, "prompt": [ids], "max_tokens": 0, "logprobs": 1, "echo": True, "temperature": 0}
    if stream:
        chunks = sse(server, "completions", body)
        choice = chunks[0]["choices"][0]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    else:
        status, text = post(server, "completions", json.dumps(body).encode())
        assert status == 200, text
        answer = json.loads(text)
        choice = answer["choices"][0]
        assert answer["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0, "total_tokens": len(ids)}
        assert choice["finish_reason"] == "length"
    assert choice["text"] == tokenizer.decode(ids)
    reference = forward_logprobs(model, ids)
    expected = [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert choice["logprobs"]["token_logprobs"][0] is None
    assert choice["logprobs"]["token_logprobs"][1:] == pytest.approx(expected, abs=TOL)


def test_without_continuous_batching_generated_logprobs_are_refused_and_echo_still_scores(served_dir, local):
    """`--no_continuous_batching` decodes with `generate`, which records no logprobs: asked for, they are a 400 that
    says so; an echo-only request (nothing generated) is scored as with continuous batching."""
    from fastapi.testclient import TestClient

    model, tokenizer = local
    app = build_app(str(served_dir), ServeOptions(continuous_batching=False))
    ids = tokenizer("The quick brown fox")["input_ids"]
    try:
        with TestClient(app) as http:
            chat_body = {"model": str(served_dir), "messages": CONVERSATIONS[0], "logprobs": True, "max_tokens": 4}
            refused = http.post("/v1/chat/completions", json=chat_body)
            echo = {"model": str(served_dir), "prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 0}
            scored = http.post("/v1/completions", json=echo)
    finally:
        app.state.generation_state.shutdown()
    assert refused.status_code == 400 and "--no_continuous_batching" in refused.json()["error"]["message"]
    assert scored.status_code == 200, scored.text
    reference = forward_logprobs(model, ids)
    expected = [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert scored.json()["choices"][0]["logprobs"]["token_logprobs"][1:] == pytest.approx(expected, abs=TOL)


def test_echo_logprobs_are_refused_where_attention_runs_only_inside_the_batch(served_dir):
    """Eager attention becomes paged once continuous batching starts; a forward pass outside the batch would then
    attend without a causal mask, so echo with logprobs is refused with the flag that serves it."""
    from fastapi.testclient import TestClient

    app = build_app(str(served_dir), ServeOptions(attn_implementation="eager"))
    echo = {"model": str(served_dir), "prompt": "The quick brown fox", "max_tokens": 0, "echo": True, "logprobs": 0}
    try:
        with TestClient(app) as http:
            first = http.post(
                "/v1/chat/completions", json={"model": str(served_dir), "messages": CONVERSATIONS[0], "max_tokens": 2}
            )
            refused = http.post("/v1/completions", json=echo)
    finally:
        app.state.generation_state.shutdown()
    assert first.status_code == 200
    assert refused.status_code == 400 and "--attn_implementation sdpa" in refused.json()["error"]["message"]
