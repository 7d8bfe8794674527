"""hf_simplegpt.serving.app and .sampling without a server process: stop strings in streams, the per-row sampling
step of the continuous batch, and a torchao-quantized folder served in-process."""

import asyncio
import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_simplegpt.generation import generate
from hf_simplegpt.serving.app import StopAtStrings, build_app, decode_as_streamed
from hf_simplegpt.serving.sampling import Decoding, choose_tokens


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
)
def test_streamed_text_ends_before_the_first_stop_string(chunks, stops, text):
    out = drain(chunks, stops)
    assert out[-1] is None and "".join(out[:-1]) == text and "" not in out


def test_a_whole_reply_is_decoded_as_its_stream_is(tiny_tokenizer):
    ids = tiny_tokenizer("naïve café", add_special_tokens=False)["input_ids"]
    assert decode_as_streamed(tiny_tokenizer, ids) == "naïve café"
    cut = ids[:-1]  # "é" is two bytes, the last token holds its second one
    assert tiny_tokenizer.decode(cut).endswith("\ufffd")
    assert decode_as_streamed(tiny_tokenizer, cut) == "naïve caf"


def draws(decoding_of, rows: int, steps: int, logits_of) -> list[list[int]]:
    """The tokens `choose_tokens` picks for each of `rows` rows over `steps` steps."""
    decodings = [decoding_of(row) for row in range(rows)]
    out = [[] for _ in range(rows)]
    for step in range(steps):
        tokens, _ = choose_tokens(logits_of(step, rows), decodings, [([], out[row]) for row in range(rows)])
        for row, token in enumerate(tokens.tolist()):
            out[row].append(token)
    return out


def test_a_seeded_row_draws_the_same_tokens_alone_and_in_any_batch():
    torch.manual_seed(0)
    table = torch.randn(40, 64, 50)  # logits of step, row, token

    def logits_of(step, rows):
        return table[step, :rows]

    def mixed(row):  # row 0: the seeded request; the others a mix of greedy, seeded and unseeded sampling
        if row == 0:
            return Decoding(do_sample=True, temperature=0.9, top_p=0.9, top_k=20, seed=7)
        return [
            Decoding(),
            Decoding(do_sample=True, seed=row),
            Decoding(do_sample=True, temperature=1.5),
            Decoding(do_sample=True, frequency_penalty=1.0, logit_bias={3: 5.0}),
        ][row % 4]

    alone = draws(mixed, 1, 40, logits_of)[0]
    assert draws(mixed, 32, 40, logits_of)[0] == alone
    assert draws(mixed, 5, 40, logits_of)[0] == alone
    other_seed = draws(
        lambda row: Decoding(do_sample=True, temperature=0.9, top_p=0.9, top_k=20, seed=8), 1, 40, logits_of
    )[0]
    assert other_seed != alone


def test_each_row_keeps_its_own_decoding_settings():
    torch.manual_seed(0)
    logits = torch.randn(6, 50)
    greedy = logits.argmax(-1)
    decodings = [
        Decoding(),
        Decoding(do_sample=True, top_k=1, seed=1),
        Decoding(do_sample=True, top_p=1e-6, seed=2),
        Decoding(logit_bias={7: 100.0}),
        Decoding(do_sample=True, temperature=1e-4, seed=3),
        Decoding(do_sample=True, seed=4),
    ]
    tokens, logprobs = choose_tokens(logits.clone(), decodings, [([], [])] * 6)
    assert logprobs is None
    # Greedy, top_k=1, top_p -> 0 and temperature -> 0 all give the most likely token; logit_bias +100 forces one.
    assert tokens[[0, 1, 2, 4]].tolist() == greedy[[0, 1, 2, 4]].tolist() and tokens[3] == 7
    # Penalties: a token seen n times loses frequency_penalty * n + presence_penalty; repetition_penalty divides.
    row = torch.zeros(1, 5)
    row[0, 2], row[0, 4] = 2.0, 1.0
    seen = ([], [2, 2])
    assert choose_tokens(row.clone(), [Decoding(frequency_penalty=0.6)], [seen])[0].item() == 4  # 2 - 1.2 < 1
    assert choose_tokens(row.clone(), [Decoding(presence_penalty=0.6)], [seen])[0].item() == 2  # 2 - 0.6 > 1
    assert choose_tokens(row.clone(), [Decoding(repetition_penalty=2.5)], [seen])[0].item() == 4  # 2 / 2.5 < 1
    # The sampled row's draws follow its distribution: with seeds 0..1999, token frequencies match the softmax.
    probs = torch.tensor([[0.5, 0.3, 0.2]]).log()
    counts = torch.zeros(3)
    for seed in range(2000):
        counts[choose_tokens(probs.clone(), [Decoding(do_sample=True, seed=seed)], [([], [])])[0].item()] += 1
    assert torch.allclose(counts / 2000, torch.tensor([0.5, 0.3, 0.2]), atol=0.04)


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
