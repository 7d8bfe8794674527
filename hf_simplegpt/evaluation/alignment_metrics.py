"""How alignment is measured on held-out data: reward-model preference accuracy, DPO's chosen-over-rejected
log-probability margin, completions sampled as GRPO sees them, and the teacher-student divergence of distillation.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..generation import context_length, generate, keep_last_tokens
from ..rewards import RewardModelScorer, Text
from .loglikelihood import score_token_pairs


def preference_accuracy(scorer: RewardModelScorer, rows: Sequence[dict]) -> float:
    """Fraction of preference rows whose chosen answer the reward model scores above the rejected one."""
    prompts = [row.get("prompt") for row in rows]
    chosen = scorer.score(prompts, [row["chosen"] for row in rows])
    rejected = scorer.score(prompts, [row["rejected"] for row in rows])
    return (chosen > rejected).float().mean().item()


def _prompt_and_full_ids(tokenizer, prompt: Text, completion: Text) -> tuple[list[int], list[int]]:
    # Tokenized as DPOTrainer does: the completion is what follows the prompt's tokens (EOS appended to plain text).
    if isinstance(completion, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        full_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)
        return list(prompt_ids["input_ids"]), list(full_ids["input_ids"])
    return tokenizer(prompt)["input_ids"], tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def completion_logprobs(model, tokenizer, prompts: Sequence[Text], completions: Sequence[Text]) -> torch.Tensor:
    """Summed log-probability of each completion given its prompt under a causal LM, shape (n,)."""
    pairs = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids, full_ids = _prompt_and_full_ids(tokenizer, prompt, completion)
        start = max(_common_prefix(prompt_ids, full_ids), 1)  # the first token has nothing to be predicted from
        pairs.append((full_ids[:start], full_ids[start:]))
    # Right padding: a PEFT-wrapped policy takes no position_ids, and the model derives them from the mask.
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return torch.tensor(score_token_pairs(model, pairs, padding_side="right", pad_token_id=pad_token_id))


def preference_logp_gaps(model, tokenizer, rows: Sequence[dict]) -> torch.Tensor:
    """log p(chosen | prompt) - log p(rejected | prompt) for each preference row, shape (n,); DPO should raise it."""
    prompts = [row["prompt"] for row in rows]
    chosen = completion_logprobs(model, tokenizer, prompts, [row["chosen"] for row in rows])
    rejected = completion_logprobs(model, tokenizer, prompts, [row["rejected"] for row in rows])
    return chosen - rejected


def sample_completions(
    model, tokenizer, prompts: Sequence[Text], max_new_tokens: int = 24, seed: int = 0, batch_size: int = 64
) -> list[Text]:
    """One sampled completion (temperature 1, full distribution) per prompt, in the prompt's format, as GRPO sees it."""
    texts = generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=True, seed=seed, batch_size=batch_size
    )
    return [[{"role": "assistant", "content": t}] if isinstance(p, list) else t for p, t in zip(prompts, texts)]


@torch.no_grad()
def completion_kl(teacher, student, tokenizer, prompts: Sequence[Text], completions: Sequence[Text]) -> float:
    """Mean per-token KL(teacher || student) of the next-token distributions over the completion tokens.

    The two models must share the vocabulary. Distillation should lower it on held-out prompts.
    """
    device = next(student.parameters()).device
    pairs = [_prompt_and_full_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    limit = min(filter(None, (context_length(teacher), context_length(student))), default=None)
    kept = keep_last_tokens([full for _, full in pairs], limit, "prompt + completion sequences")
    total, count = 0.0, 0
    for (prompt_ids, full_ids), kept_ids in zip(pairs, kept):
        # A sequence cut to the context loses the start of its prompt; the completion keeps its tokens.
        start = max(_common_prefix(prompt_ids, full_ids) - (len(full_ids) - len(kept_ids)), 1)
        ids = torch.tensor([kept_ids], device=device)
        # Position t predicts token t + 1, so the completion's tokens are predicted from positions start - 1 on.
        teacher_logprobs = teacher(input_ids=ids).logits[0, start - 1 : -1].float().log_softmax(-1)
        student_logprobs = student(input_ids=ids).logits[0, start - 1 : -1].float().log_softmax(-1)
        kl = F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="none").sum(-1)
        total += kl.sum().item()
        count += kl.numel()
    return total / count
