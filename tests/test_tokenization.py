"""The BPE tokenizer: special tokens, round trips, the chat template's assistant mask."""

import pytest
from transformers import AutoTokenizer

from hf_simplegpt.tokenization import SPECIAL_TOKENS, train_tokenizer


def test_tokenizer_saves_and_reloads_through_auto_tokenizer(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "The quick brown fox, 3.14159!  Ünïcödé too."
    assert len(loaded) == 300
    assert loaded(text).input_ids == tiny_tokenizer(text).input_ids
    assert loaded.decode(loaded(text).input_ids) == text  # byte-level: any text round-trips exactly
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<|bos|>", "<|endoftext|>", "<|pad|>")


def test_bpe_learns_merges_from_the_corpus(tiny_tokenizer):
    # with only 36 merges, frequent pieces of the corpus already take fewer tokens than bytes; unseen text does not
    assert len(tiny_tokenizer("The quick brown fox").input_ids) < len("The quick brown fox")
    assert len(tiny_tokenizer("zyxwvq").input_ids) == len("zyxwvq")


def test_chat_template_masks_exactly_the_assistant_tokens(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "hello"},
    ]
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nSay hi<|endoftext|>\n"
        "<|assistant|>\nhi there<|endoftext|>\n<|user|>\nAgain<|endoftext|>\n<|assistant|>\nhello<|endoftext|>\n"
    )
    encoded = tiny_tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, keep in zip(encoded["input_ids"], encoded["assistant_masks"]) if keep]
    expected = tiny_tokenizer("hi there<|endoftext|>").input_ids + tiny_tokenizer("hello<|endoftext|>").input_ids
    assert kept == expected
    prompt = tiny_tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nSay hi<|endoftext|>\n<|assistant|>\n")


def test_unknown_chat_role_is_rejected(tiny_tokenizer):
    with pytest.raises(Exception, match="Unknown chat role tool"):
        tiny_tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_vocab_smaller_than_the_special_tokens_is_rejected():
    with pytest.raises(ValueError, match=f"alone need {256 + len(SPECIAL_TOKENS)}"):
        train_tokenizer(["some text"], vocab_size=100)


def test_empty_training_text_is_rejected():
    with pytest.raises(ValueError, match="learned no merges"):
        train_tokenizer([], vocab_size=300)
