"""hf_simplegpt.evaluation.alignment_metrics: the held-out measures of the alignment jobs against plain references."""

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.evaluation import alignment_metrics
from tests.conftest import tiny_config_kwargs

CHAT = [{"role": "user", "content": "Name a color."}]


def summed_logprob(model, tokenizer, prompt_ids: list[int], completion_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logprobs = model(ids).logits[0].log_softmax(-1)
    return sum(logprobs[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(completion_ids))


def test_completion_logprobs_sum_the_completion_tokens_plain_and_chat(tiny_model, tiny_tokenizer):
    plain = alignment_metrics.completion_logprobs(tiny_model, tiny_tokenizer, ["The quick"], [" brown fox"])
    prompt_ids = tiny_tokenizer("The quick")["input_ids"]
    completion_ids = tiny_tokenizer("The quick brown fox" + tiny_tokenizer.eos_token)["input_ids"][len(prompt_ids) :]
    assert plain.item() == pytest.approx(
        summed_logprob(tiny_model, tiny_tokenizer, prompt_ids, completion_ids), abs=1e-4
    )

    answer = [{"role": "assistant", "content": "Blue."}]
    chat = alignment_metrics.completion_logprobs(tiny_model, tiny_tokenizer, [CHAT], [answer])
    prompt_ids = tiny_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=True)
    full_ids = tiny_tokenizer.apply_chat_template(CHAT + answer, tokenize=True, return_dict=True)["input_ids"]
    prompt_ids = list(prompt_ids["input_ids"])
    assert chat.item() == pytest.approx(
        summed_logprob(tiny_model, tiny_tokenizer, prompt_ids, list(full_ids[len(prompt_ids) :])), abs=1e-4
    )


def test_preference_gaps_are_chosen_minus_rejected(tiny_model, tiny_tokenizer):
    rows = [{"prompt": "The sun", "chosen": " rises", "rejected": " sets"}]
    gap = alignment_metrics.preference_logp_gaps(tiny_model, tiny_tokenizer, rows)
    chosen, rejected = (
        alignment_metrics.completion_logprobs(tiny_model, tiny_tokenizer, ["The sun"], [c]) for c in (" rises", " sets")
    )
    assert gap.item() == pytest.approx((chosen - rejected).item(), abs=1e-6)


def test_kl_is_zero_against_itself_and_positive_against_another_model(tiny_model, tiny_tokenizer):
    prompts, completions = ["The quick", "To be"], [" brown fox", ", or not"]
    assert alignment_metrics.completion_kl(
        tiny_model, tiny_model, tiny_tokenizer, prompts, completions
    ) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(1)
    other = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs())).eval()
    assert alignment_metrics.completion_kl(tiny_model, other, tiny_tokenizer, prompts, completions) > 1e-3


def test_sampled_completions_keep_the_prompts_format(tiny_model, tiny_tokenizer):
    completions = alignment_metrics.sample_completions(
        tiny_model, tiny_tokenizer, ["The quick", CHAT], max_new_tokens=4
    )
    assert isinstance(completions[0], str) and completions[1][0]["role"] == "assistant"
    again = alignment_metrics.sample_completions(tiny_model, tiny_tokenizer, ["The quick", CHAT], max_new_tokens=4)
    assert again == completions  # seeded
