"""hf_simplegpt.serving.app without a server process: stop strings in streams, which requests continuous batching
serves, and a torchao-quantized folder served in-process."""

import asyncio
import importlib.util

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from hf_simplegpt.generation import generate
from hf_simplegpt.serving.app import StopAtStrings, batchable, build_app, decode_as_streamed


def drain(chunks: list, stops: list[str]) -> list:
    """What a handler reads from a StopAtStrings over a queue that received `chunks` then the end of stream."""

    async def run():
        queue = asyncio.Queue()
        for chunk in [*chunks, None]:
            queue.put_nowait(chunk)
        stream, out = StopAtStrings(queue, stops), []
        while not out or out[-1] is not None:
            out.append(await stream.get())
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    "chunks, stops, text",
    [
        (["Hello", " wor", "ld. Bye"], ["world"], "Hello "),  # the stop string spans chunks
        (["ab", "c", "d"], ["cd", "bc"], "a"),  # the earliest stop wins
        (["Hel", "lo"], ["lx"], "Hello"),  # a held-back prefix that does not complete is released
        (["x\nEND", "ignored"], ["END"], "x\n"),  # text after the stop (same token or later) is dropped
    ],
)  # fmt: skip
def test_streamed_text_ends_before_the_first_stop_string(chunks, stops, text):
    out = drain(chunks, stops)
    assert out[-1] is None and "".join(out[:-1]) == text and "" not in out


def test_a_whole_reply_is_decoded_as_its_stream_is(tiny_tokenizer):
    ids = tiny_tokenizer("naïve café", add_special_tokens=False)["input_ids"]
    assert decode_as_streamed(tiny_tokenizer, ids) == "naïve café"
    cut = ids[:-1]  # "é" is two bytes, the last token holds its second one
    assert tiny_tokenizer.decode(cut).endswith("\ufffd")
    assert decode_as_streamed(tiny_tokenizer, cut) == "naïve caf"


def test_continuous_batching_serves_only_the_requests_it_decodes_exactly():
    greedy, sampling = GenerationConfig(do_sample=False), GenerationConfig(do_sample=True, temperature=0.7)
    assert batchable({"max_tokens": 5}, greedy) and batchable({"temperature": 0}, greedy)
    assert batchable({}, sampling) and not batchable({"temperature": 0}, sampling)
    for own in ({"temperature": 0.5}, {"top_p": 0.9}, {"seed": 1}, {"stop": "."}, {"generation_config": "{}"}):
        assert not batchable(own, greedy), own


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_a_torchao_quantized_folder_is_served(served_dir, tmp_path):
    from fastapi.testclient import TestClient
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    quantization = TorchAoConfig(Int8WeightOnlyConfig())
    quantized = AutoModelForCausalLM.from_pretrained(served_dir, quantization_config=quantization, device_map="cpu")
    quantized.save_pretrained(tmp_path / "int8")
    tokenizer = AutoTokenizer.from_pretrained(served_dir)
    tokenizer.save_pretrained(tmp_path / "int8")
    app = build_app(str(tmp_path / "int8"))
    messages = [{"role": "user", "content": "The quick brown fox"}]
    try:
        with TestClient(app) as client:
            body = {"model": str(tmp_path / "int8"), "messages": messages, "max_tokens": 20}
            reply = client.post("/v1/chat/completions", json=body).json()
    finally:
        app.state.generation_state.shutdown()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "int8", device_map="cpu").eval()
    assert type(reference.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"  # still quantized
    expected = generate(reference, tokenizer, [messages], max_new_tokens=20)[0]
    # The server never sends the U+FFFD of a last character cut in the middle of its bytes (see decode_as_streamed).
    assert reply["choices"][0]["message"]["content"] == expected.rstrip("\ufffd") and len(expected.rstrip("\ufffd")) > 5
