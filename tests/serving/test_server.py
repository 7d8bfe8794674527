"""`hf-simplegpt serve` (hf_simplegpt/serving/server.py and app.py) through the real `openai` client, against the shared
server on 127.0.0.1: what it returns equals `generate`, streamed equals non-streamed, every decoding setting is
honoured, concurrent clients are batched, bad requests get a 4xx and the server keeps serving."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_simplegpt.generation import encode_prompt, generate
from hf_simplegpt.serving import server as server_job
from hf_simplegpt.serving.app import decode_as_streamed
from tests.conftest import REPO_ROOT
from tests.serving.conftest import CONTEXT, start_server
from tests.test_readme import code_blocks

CONVERSATIONS = [
    [{"role": "user", "content": "The quick brown fox"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "A journey of a thousand miles"}],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why?"},
    ],
]


@pytest.fixture(scope="module")
def local(served_dir):
    """The served folder loaded here: (model, tokenizer), the reference the server must match."""
    return AutoModelForCausalLM.from_pretrained(served_dir).eval(), AutoTokenizer.from_pretrained(served_dir)


def chat(client, server, messages, **settings):
    return client.chat.completions.create(model=server.model, messages=messages, **settings)


def streamed(client, server, messages, include_usage=True, **settings) -> tuple[str, str, object]:
    """(text, finish_reason, usage) of a streamed chat completion, from its chunks. As in OpenAI's API, usage comes
    only when asked for, alone in the last chunk (no choices)."""
    text, finish_reason, usage = "", None, None
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(chat(client, server, messages, stream=True, **options, **settings))
    for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
            assert chunk.usage is None
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        usage = chunks[-1].usage
    return text, finish_reason, usage


def greedy(model, tokenizer, prompt, max_new_tokens: int) -> tuple[str, list[int], list[int]]:
    """(reply, prompt ids, new ids) of `generate` for one chat or plain prompt. The reply is `hf_simplegpt.generation
    .generate`'s text, without the U+FFFD of an unfinished last character (which a stream never sends)."""
    ids = encode_prompt(tokenizer, prompt)
    output = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    new = output[0, len(ids) :].tolist()
    text = generate(model, tokenizer, [prompt], max_new_tokens=max_new_tokens)[0]
    streamed_text = decode_as_streamed(tokenizer, new)
    assert streamed_text == text or (text.endswith("\ufffd") and text.startswith(streamed_text))
    return streamed_text, ids, new


def post(server, route: str, body: bytes) -> tuple[int, str]:
    """(status, body) of a raw POST, for requests the openai client would not send."""
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(f"{server.base_url}/{route}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_models_route_lists_the_served_folder(client, server):
    assert [model.id for model in client.models.list().data] == [server.model]


def test_greedy_chat_of_concurrent_clients_equals_generate(client, server, local):
    model, tokenizer = local
    with ThreadPoolExecutor(len(CONVERSATIONS)) as pool:
        replies = list(pool.map(lambda messages: chat(client, server, messages, max_tokens=24), CONVERSATIONS))
    for messages, reply in zip(CONVERSATIONS, replies):
        text, prompt, new = greedy(model, tokenizer, messages, 24)  # prompt: the folder's chat template
        assert reply.choices[0].message.content == text and text
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(prompt), len(new))
        assert reply.choices[0].finish_reason == ("length" if len(new) == 24 else "stop")


def test_completions_route_continues_plain_text_as_generate(client, server, local):
    model, tokenizer = local
    reply = client.completions.create(model=server.model, prompt="The quick brown", max_tokens=16)
    text, prompt, new = greedy(model, tokenizer, "The quick brown", 16)
    assert reply.choices[0].text == text and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        len(prompt),
        len(new),
    )


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.9, "seed": 7}], ids=["greedy", "sampled"])
def test_streamed_text_equals_non_streamed(client, server, settings):
    messages = CONVERSATIONS[1]
    reply = chat(client, server, messages, max_tokens=40, **settings)
    text, finish_reason, usage = streamed(client, server, messages, max_tokens=40, **settings)
    assert text == reply.choices[0].message.content and text
    assert streamed(client, server, messages, include_usage=False, max_tokens=40, **settings) == (
        text,
        finish_reason,
        None,
    )
    assert finish_reason == reply.choices[0].finish_reason
    assert usage.completion_tokens == reply.usage.completion_tokens and usage.prompt_tokens == reply.usage.prompt_tokens


def test_temperature_top_p_and_seed_are_honoured_even_under_concurrency(client, server):
    messages = CONVERSATIONS[0]
    greedy = chat(client, server, messages, max_tokens=30).choices[0].message.content

    def sample(seed, **settings):
        return chat(client, server, messages, max_tokens=30, seed=seed, **settings).choices[0].message.content

    alone = [sample(seed, temperature=1.0) for seed in (1, 2)]
    with ThreadPoolExecutor(4) as pool:  # seeds drawn right before each request's own decoding, not at arrival
        together = list(pool.map(lambda seed: sample(seed, temperature=1.0), (1, 2, 1, 2)))
    assert together == alone * 2
    assert alone[0] != alone[1] and greedy not in alone
    # top_p keeps the smallest set of tokens reaching p: at 1e-6 only the most likely one, i.e. greedy decoding.
    assert sample(3, temperature=1.0, top_p=1e-6) == greedy


def test_stop_ends_the_text_before_the_stop_string(client, server):
    messages = CONVERSATIONS[0]
    full = chat(client, server, messages, max_tokens=40).choices[0].message.content
    at = next(i for i in range(2, len(full) - 1) if re.fullmatch(r"[A-Za-z0-9]{2}", full[i : i + 2]))
    stop = full[at : at + 2]
    expected = full[: full.index(stop)]
    reply = chat(client, server, messages, max_tokens=40, stop=[stop, "never-generated"])
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert streamed(client, server, messages, max_tokens=40, stop=stop)[0] == expected


def test_replies_are_capped_at_the_models_context(client, server):
    for settings in ({"max_tokens": 10 * CONTEXT}, {}):  # too many new tokens asked for; none asked for
        reply = chat(client, server, CONVERSATIONS[0], **settings)
        assert reply.usage.total_tokens <= CONTEXT
        assert reply.choices[0].finish_reason == "stop" or reply.usage.total_tokens == CONTEXT


def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving(client, server, local):
    ok = {"model": server.model, "messages": CONVERSATIONS[0]}
    cases = [
        ({**ok, "model": "some/other-model"}, "chat/completions", 400, "pinned to"),
        ({"model": server.model}, "chat/completions", 400, "`messages` is required"),
        ({**ok, "messages": []}, "chat/completions", 400, "`messages` is required"),
        ({**ok, "messages": [{"content": "no role"}]}, "chat/completions", 400, "messages[0] must be an object"),
        ({**ok, "messages": [{"role": "robot", "content": "hi"}]}, "chat/completions", 400, "Unknown chat role robot"),
        ({**ok, "max_tokens": 0}, "chat/completions", 400, "`max_tokens` must be a positive integer, got 0"),
        ({**ok, "max_tokens": -3}, "chat/completions", 400, "`max_tokens` must be a positive integer, got -3"),
        ({**ok, "temperature": -1}, "chat/completions", 400, "`temperature` must be a number in [0, 2], got -1"),
        ({**ok, "top_p": 0}, "chat/completions", 400, "`top_p` must be a number in (0, 1]"),
        ({**ok, "n": 2}, "chat/completions", 400, "one choice per request"),
        ({**ok, "stop": 5}, "chat/completions", 400, "`stop` must be a non-empty string"),
        (
            {**ok, "messages": [{"role": "user", "content": "fox " * 2 * CONTEXT}]},
            "chat/completions",
            400,
            f"this model's context is {CONTEXT} positions",
        ),
        (
            {"model": server.model, "prompt": "fox " * 2 * CONTEXT, "stream": True},
            "completions",
            400,
            f"this model's context is {CONTEXT} positions",
        ),
        ({"model": server.model}, "completions", 400, "`prompt` is required"),
    ]
    for body, route, status, problem in cases:
        code, detail = post(server, route, json.dumps(body).encode())
        assert (code, problem in detail) == (status, True), (body, code, detail)
    code, detail = post(server, "chat/completions", b'{"model": "x", "messages": [')
    assert code == 422 and "JSON decode error" in detail
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError, match=re.escape("400 - `max_tokens` must be a positive integer, got 0")):
        chat(client, server, CONVERSATIONS[0], max_tokens=0)  # the openai client shows the server's message
    model, tokenizer = local
    reply = chat(client, server, CONVERSATIONS[2], max_tokens=12)
    assert reply.choices[0].message.content == greedy(model, tokenizer, CONVERSATIONS[2], 12)[0]


def test_a_reply_does_not_depend_on_the_requests_batched_with_it(client, server):
    """A seeded sampled request and a greedy one give the same text alone and inside a batch of 32 mixed requests
    (greedy, sampled with and without seeds, top_k/top_p, penalties, logit_bias, stop strings, streamed or not), all
    decoded together by continuous batching, each with its own settings. (Throughput is measured in
    benchmarks/serve_load.py, not asserted here.)"""
    seeded = {"temperature": 0.9, "top_p": 0.95, "seed": 1234}
    mixed = [
        {},
        {"temperature": 1.0},
        {"temperature": 0.7, "seed": 5, "top_k": 20},
        {"frequency_penalty": 1.5},
        {"presence_penalty": 1.0, "temperature": 0.5},
        {"logit_bias": {"40": 5}},
        {"stop": ["e"]},
        {"temperature": 1.2, "seed": 9, "stop": ["a", "o"]},
    ]

    def ask(settings, stream=False):
        settings = {**settings}
        if "top_k" in settings:  # not a parameter of the openai client: sent as vLLM clients send it
            settings["extra_body"] = {"top_k": settings.pop("top_k")}
        if stream:
            return streamed(client, server, CONVERSATIONS[0], include_usage=False, max_tokens=24, **settings)[0]
        return chat(client, server, CONVERSATIONS[0], max_tokens=24, **settings).choices[0].message.content

    alone_sampled, alone_greedy = ask(seeded), ask({})
    jobs = [(seeded, False), ({}, False)] + [(mixed[i % len(mixed)], i % 3 == 0) for i in range(30)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(lambda job: ask(*job), jobs))
    assert replies[0] == alone_sampled and replies[1] == alone_greedy and alone_sampled != alone_greedy
    assert replies[0] == ask(seeded, stream=True)
    # Each mate kept its own settings: stop strings ended their text, the greedy mates equal the greedy reply.
    for (settings, _), reply in zip(jobs[2:], replies[2:]):
        assert not any(stop in reply for stop in settings.get("stop", [])), (settings, reply)
        if settings == {}:
            assert reply == alone_greedy


def test_a_cached_prompt_prefix_leaves_greedy_replies_unchanged(client, server, local):
    """Requests sharing a long system prompt reuse its cached blocks (counted on /metrics), and each greedy reply
    still equals `generate` on the whole prompt."""
    model, tokenizer = local
    system = {"role": "system", "content": "You answer questions about the quick brown fox. " * 3}
    metrics = f"{server.base_url.removesuffix('/v1')}/metrics"
    before = json.loads(urllib.request.urlopen(metrics, timeout=30).read())["prefix_cache"]
    for question in ("Why does it jump?", "Where is the dog?", "Why does it jump?"):
        messages = [system, {"role": "user", "content": question}]
        reply = chat(client, server, messages, max_tokens=16).choices[0].message.content
        assert reply == greedy(model, tokenizer, messages, 16)[0]
    after = json.loads(urllib.request.urlopen(metrics, timeout=30).read())["prefix_cache"]
    assert after["prompts"] - before["prompts"] == 3
    # The 2nd and 3rd requests read the system prompt's full blocks (32 tokens each) from the cache.
    assert after["cached_prompt_tokens"] - before["cached_prompt_tokens"] >= 2 * 64, (before, after)
    assert 0 < after["prefix_cache_hit_rate"] <= 1


def test_concurrent_clients_get_what_each_gets_alone(client, server):
    # Batched decoding gives each request exactly what it gets alone. (How much faster 8 concurrent clients are is a
    # timing: benchmarks/serve_load.py measures it.)
    prompts = [[{"role": "user", "content": f"Tell me story number {i}."}] for i in range(8)]

    def ask(messages):
        return chat(client, server, messages, max_tokens=96)

    sequential = [ask(messages) for messages in prompts]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(ask, prompts))
    assert [r.choices[0].message.content for r in concurrent] == [r.choices[0].message.content for r in sequential]
    assert all(r.usage.completion_tokens > 0 for r in concurrent)


def test_transformers_chat_talks_to_the_server(server):
    """transformers' terminal client, fed a message, a "no" to "continue?", and !exit on stdin."""
    command = [
        os.path.join(os.path.dirname(sys.executable), "transformers"),
        "chat",
        server.model,
        server.base_url.removesuffix("/v1"),
        "max_new_tokens=8",
        "do_sample=False",
    ]
    # huggingface_hub's HTTP client, which `transformers chat` uses, refuses even 127.0.0.1 when HF_HUB_OFFLINE is set.
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    result = subprocess.run(
        command,
        input="hello there\nn\n!exit\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "OMP_NUM_THREADS": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"{server.model} was already loaded" in result.stdout
    # It asks for no usage (stream_options), so as from OpenAI it gets none and prints no token count.
    assert "Generation stopped after reaching the token limit" in result.stdout and "tokens in" not in result.stdout


def test_an_adapter_folder_is_served_merged_and_sigint_stops_the_server(served_dir, local, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model, tokenizer = local
    torch.manual_seed(1)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(served_dir), lora).save_pretrained(tmp_path / "adapter")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(served_dir), tmp_path / "adapter")
    merged = merged.merge_and_unload().eval()
    server = start_server(tmp_path / "adapter", tmp_path / "adapter-server.log")
    try:
        openai = pytest.importorskip("openai")
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", timeout=60, max_retries=0)
        reply = chat(client, server, CONVERSATIONS[0], max_tokens=20).choices[0].message.content
    finally:
        returncode = server.stop(signal.SIGINT)
    assert reply == greedy(merged, tokenizer, CONVERSATIONS[0], 20)[0]
    assert reply != greedy(model, tokenizer, CONVERSATIONS[0], 20)[0]  # the adapter is applied
    assert returncode == 0 and "Application shutdown complete." in server.output()


def test_the_client_code_of_the_readme_and_the_guide_runs_as_written(client, server):
    """README.md's openai block and docs/serving.md's streaming block, run as written but for the test server's
    address and model name, print what the server answers."""
    readme = next(
        code
        for lang, code, reason in code_blocks(REPO_ROOT / "README.md")
        if lang == "python" and reason and "tests/serving/test_server.py" in reason
    )
    guide = next(code for lang, code, _ in code_blocks(REPO_ROOT / "docs" / "serving.md") if "stream=True" in code)
    messages = [{"role": "user", "content": "What does the for statement do?"}]
    reply = chat(client, server, messages, max_tokens=32).choices[0].message.content
    streamed = chat(client, server, messages, max_tokens=64, temperature=0.8, top_p=0.95, seed=1, stop=["."])
    expected = [
        f"{reply}\n",
        f"{streamed.choices[0].message.content}\n[{streamed.choices[0].finish_reason}] "
        f"{streamed.usage.completion_tokens} tokens\n",
    ]
    for code, output in zip((readme, guide), expected):
        assert "http://127.0.0.1:8000/v1" in code and '"outputs/pretrain-default"' in code
        code = code.replace("http://127.0.0.1:8000/v1", server.base_url)
        code = code.replace('"outputs/pretrain-default"', repr(server.model))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stdout) == (0, output), result.stderr[-2000:]


@pytest.mark.parametrize(
    "flags, problem",
    [
        (["--replicas", "2"], "--replicas 2 needs --ray"),
        (["--ray", "--chat"], "hf-simplegpt chat-ui --base_url"),
        (["--port", "1"], "no such folder"),
    ],
)
def test_bad_command_lines_are_refused_before_loading(flags, problem, tmp_path):
    model_dir = REPO_ROOT / "no-such-model" if "--port" in flags else tmp_path
    with pytest.raises(ValueError, match=re.escape(problem)):
        server_job.main([str(model_dir), *flags])
