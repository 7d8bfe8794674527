"""What the alignment recipes share: a synthetic preference task, reward functions, data checks, reward-model scoring.

Used by `recipes/reward.py`, `recipes/rl.py`, `recipes/dpo.py`, `recipes/distill.py` and the offline demonstration
`recipes/alignment_demo.py`. The trainers themselves are TRL's (`RewardTrainer`, `GRPOTrainer`, `RLOOTrainer`,
`DPOTrainer`, `DistillationTrainer`); this module only prepares what they consume and measures what they produce.

Data come in TRL's two shapes: *plain* (strings) or *conversational* (lists of `{"role", "content"}` messages).
"""

import functools
import importlib
import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from .evaluation.loglikelihood import score_token_pairs

Message = dict[str, str]
Text = str | list[Message]  # one prompt or completion, plain or conversational

# ------------------------------------------------------------------------------------------------ synthetic task

_ANIMALS = ("cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen", "ant", "elk", "bat", "yak")
_COLORS = ("red", "green", "brown", "white", "blue")
_VERBS = ("runs", "sleeps", "jumps", "eats", "sings", "hides", "swims", "walks")
_PLACES = ("home", "park", "field", "river", "hill", "barn", "lake", "road")
_PROMPTS = ("Tell me about the {}.", "Describe the {}.", "What is the {} like?", "Say something about the {}.")


@dataclass
class KeywordTask:
    """A toy preference task whose goal is measurable: answers should contain `keyword`.

    Prompts ask about an animal; answers are one short sentence ("the fox is red and runs near the lake .").
    In the SFT data the colour slot holds the keyword 1 time in `len(colors)` (20% with the defaults), so a model
    fine-tuned on it starts with a low keyword rate that alignment should raise. Preference pairs prefer an answer
    with the keyword over one without: mostly the same sentence with another colour (so only the keyword tells them
    apart), sometimes a garbled sentence (so a reward model does not reward broken text a policy could drift to).

    Args:
        keyword: the word that makes an answer preferred (one of the colours by default, or any other word).
        conversational: produce chat messages (True) or plain strings (False).
        seed: everything drawn from this task is reproducible from it.
    """

    keyword: str = "blue"
    conversational: bool = True
    seed: int = 0

    def __post_init__(self):
        self.colors = tuple(c for c in _COLORS if c != self.keyword) + (self.keyword,)
        self._rng = random.Random(self.seed)

    def _prompt(self) -> str:
        return self._rng.choice(_PROMPTS).format(self._rng.choice(_ANIMALS))

    def _answer(self, color: str) -> str:
        r = self._rng
        return f"the {r.choice(_ANIMALS)} is {color} and {r.choice(_VERBS)} near the {r.choice(_PLACES)} ."

    def _garbled(self) -> str:
        words = self._answer(self._rng.choice(self.colors[:-1])).split()
        self._rng.shuffle(words)
        return " ".join(words[: self._rng.randint(2, len(words))])

    def _wrap(self, prompt: str, **answers: str) -> dict[str, Text]:
        if self.conversational:
            row = {"prompt": [{"role": "user", "content": prompt}]}
            row.update({k: [{"role": "assistant", "content": v}] for k, v in answers.items()})
        else:
            # Plain answers start with a space: byte-level BPE then splits prompt + answer at the same place as the
            # prompt alone, so the trainers find the prompt as an exact token prefix.
            row = {"prompt": prompt, **{k: " " + v for k, v in answers.items()}}
        return row

    def prompts(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt"}`: the input of GRPO/RLOO and of on-policy distillation."""
        return [self._wrap(self._prompt()) for _ in range(n)]

    def sft_examples(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt", "completion"}` with the keyword in 1 of `len(colors)` answers."""
        return [self._wrap(self._prompt(), completion=self._answer(self._rng.choice(self.colors))) for _ in range(n)]

    def preference_pairs(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt", "chosen", "rejected"}`: chosen has the keyword, rejected does not."""
        rows = []
        for _ in range(n):
            chosen = self._answer(self.keyword)
            if self._rng.random() < 0.75:  # the same sentence with another colour: only the keyword differs
                rejected = chosen.replace(f" {self.keyword} ", f" {self._rng.choice(self.colors[:-1])} ")
            else:
                rejected = self._garbled()
            rows.append(self._wrap(self._prompt(), chosen=chosen, rejected=rejected))
        return rows

    def texts(self, n: int) -> list[str]:
        """`n` plain prompt + answer strings, to train a tokenizer on or to measure divergence on."""
        return [f"{self._prompt()} {self._answer(self._rng.choice(self.colors))}" for _ in range(n)]


def write_jsonl(rows: Iterable[dict], path: str) -> str:
    """Write one JSON object per line; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


# ------------------------------------------------------------------------------------------------ reward functions


def completion_text(completion: Text) -> str:
    """The answer's text: the string itself, or the content of the last message of a conversational completion."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def keyword_reward(completions: Sequence[Text], keyword: str = "blue", **kwargs) -> list[float]:
    """TRL reward function: 1.0 for each completion whose words include `keyword`, else 0.0."""
    return [float(keyword in completion_text(c).split()) for c in completions]


def reward_name(func: Callable) -> str:
    """The name TRL logs a reward function under (`rewards/<name>/mean`); partials use the wrapped function's."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def load_reward_function(path: str, kwargs: dict[str, Any] | None = None) -> Callable:
    """Import a reward function from `"package.module.function"` (or `"package.module:function"`).

    `kwargs` are bound with `functools.partial`; TRL still logs the reward under the function's own name.
    """
    module_name, sep, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(f"Reward function {path!r} must be a dotted path such as 'hf_simplegpt.alignment.keyword_reward'.")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"Cannot import reward function {path!r}: {e}. Use 'package.module.function'.") from e
    if not callable(func):
        raise ValueError(f"Reward function {path!r} is a {type(func).__name__}, not a callable.")
    return functools.partial(func, **kwargs) if kwargs else func


# ------------------------------------------------------------------------------------------------ data checks


def _format_of(value: Any) -> str | None:
    if isinstance(value, str):
        return "plain"
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return "conversational"
    return None


def validate_preference_dataset(dataset, name: str = "preference data") -> str:
    """Check `dataset` holds preference pairs; returns `"plain"` or `"conversational"`.

    Needs `chosen` and `rejected` (and optionally `prompt`), all strings or all message lists.
    """
    columns = list(dataset.column_names)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(
            f"The {name} lacks the field(s) {missing}; it has {columns}. Preference data needs `chosen` and "
            "`rejected` (the preferred and the dispreferred answer), optionally with a shared `prompt`."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    fields = [c for c in ("prompt", "chosen", "rejected") if c in columns]
    formats = {c: _format_of(dataset[0][c]) for c in fields}
    if None in formats.values() or len(set(formats.values())) != 1:
        raise ValueError(
            f"The {name} mixes or misshapes formats: {formats}. Use strings for every field (plain), or lists of "
            "{'role', 'content'} messages for every field (conversational)."
        )
    return formats["chosen"]


def validate_prompt_dataset(dataset, name: str = "prompt data") -> str:
    """Check `dataset` has a `prompt` column of strings or message lists; returns `"plain"` or `"conversational"`."""
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The {name} lacks the field 'prompt'; it has {list(dataset.column_names)}. Online training (GRPO, RLOO, "
            "distillation) generates from prompts only: give one `prompt` per row (a string or a list of messages)."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    fmt = _format_of(dataset[0]["prompt"])
    if fmt is None:
        raise ValueError(f"The {name} has a `prompt` that is neither a string nor a list of messages.")
    return fmt


# ------------------------------------------------------------------------------------------------ reward models


def add_distinct_pad_token(model, tokenizer: PreTrainedTokenizerBase, pad_token: str = "<|pad|>") -> bool:
    """Give a reward model a pad token of its own; returns True if one had to be added.

    A sequence-classification model reads its score at the last non-pad token. If the tokenizer has no pad token,
    or pads with EOS, a caller that passes no attention mask would read the score *before* the trailing EOS, where
    the reward model was never trained to score (TRL's `RewardTrainer` scores plain text at an appended EOS). So
    the pad token is made a dedicated token (added to the vocabulary, embeddings resized if needed) and mirrored
    onto `model.config.pad_token_id`.
    """
    added = tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id
    if added:
        tokenizer.add_special_tokens({"pad_token": pad_token})
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return added


def load_reward_model(path: str, device: str | torch.device | None = None):
    """Load a reward model folder written by `recipes/reward.py` (or any 1-label sequence classifier).

    Returns `(model, tokenizer)`, the model in eval mode on `device`. Raises `ValueError` if the folder holds
    another kind of model (a causal LM would silently get a random score head), has more than one label, or its
    tokenizer has no pad token.
    """
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} is not a model folder ({e}). Pass the output_dir of recipes/reward.py.") from e
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{path!r} holds a {architectures or config.model_type} model, not a sequence-classification reward "
            "model. Train one with recipes/reward.py (it starts from a causal LM checkpoint) and pass its output_dir."
        )
    if config.num_labels != 1:
        raise ValueError(f"The reward model at {path!r} has num_labels={config.num_labels}; a reward model has 1.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"The reward model folder {path!r} has no tokenizer ({e}); save it next to the model.") from e
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"The tokenizer saved with the reward model at {path!r} has no pad token, so batched scores could be read "
            "at padding. Retrain with recipes/reward.py, which adds a dedicated pad token."
        )
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device or "cpu").eval(), tokenizer


class RewardModelScorer:
    """A TRL reward function backed by a reward model, formatting text exactly as `RewardTrainer` trained it.

    GRPO/RLOO, given a reward model directly, score `prompt + completion` *without* the EOS that `RewardTrainer`
    appends to plain text, so the score is read one token early and the reward is nearly flat. This scorer encodes
    plain text as `prompt + completion + eos` and conversations through the chat template, as the reward model saw
    them in training, and passes the attention mask so the score is read at the last real token.

    Args:
        model: a 1-label sequence-classification model (see `load_reward_model`).
        tokenizer: its tokenizer, with a pad token.
        batch_size: sequences scored per forward pass.
    """

    __name__ = "reward_model"  # TRL logs the reward as rewards/reward_model/mean

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64):
        if tokenizer.pad_token_id is None:
            raise ValueError("The reward model's tokenizer has no pad token; see `add_distinct_pad_token`.")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, batch_size: int = 64):
        """Score with the reward model saved at `path` (checked by `load_reward_model`)."""
        return cls(*load_reward_model(path, device), batch_size=batch_size)

    def encode(self, prompt: Text | None, completion: Text) -> list[int]:
        """Token ids of one scored sequence (plain: prompt + completion + EOS; conversational: chat template)."""
        if isinstance(completion, list):
            messages = (prompt or []) + completion
            return list(self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        text = (prompt or "") + completion
        eos = self.tokenizer.eos_token
        return self.tokenizer(text if text.endswith(eos) else text + eos)["input_ids"]

    @torch.no_grad()
    def score(self, prompts: Sequence[Text | None], completions: Sequence[Text]) -> torch.Tensor:
        """Rewards, shape (n,), for n (prompt, completion) pairs; a prompt may be None when the completion is whole."""
        ids = [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        scores = []
        for start in range(0, len(ids), self.batch_size):
            chunk = {"input_ids": ids[start : start + self.batch_size]}
            batch = self.tokenizer.pad(chunk, padding_side="right", return_tensors="pt").to(device)
            scores.append(self.model(**batch).logits[:, 0].float().cpu())
        self.model.train(was_training)
        return torch.cat(scores)

    def __call__(self, prompts: Sequence[Text], completions: Sequence[Text], **kwargs) -> list[float]:
        return self.score(prompts, completions).tolist()


# ------------------------------------------------------------------------------------------------ measurements


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


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[Text], max_new_tokens: int = 24, seed: int = 0,
                       batch_size: int = 64) -> list[Text]:
    """One sampled completion (temperature 1) per prompt, in the prompts' format, as GRPO would see it."""
    device = next(model.parameters()).device
    completions = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            completions += _sample_batch(model, tokenizer, prompts[start : start + batch_size], max_new_tokens)
    return completions


def _sample_batch(model, tokenizer, prompts: Sequence[Text], max_new_tokens: int) -> list[Text]:
    conversational = isinstance(prompts[0], list)
    if conversational:
        ids = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
               for p in prompts]  # fmt: skip
    else:
        ids = [tokenizer(p)["input_ids"] for p in prompts]
    # Left padding keeps every prompt's last token at the end, where generation continues.
    batch = tokenizer.pad({"input_ids": ids}, padding_side="left", return_tensors="pt").to(model.device)
    generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, top_k=0, top_p=1.0,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts


@torch.no_grad()
def completion_kl(teacher, student, tokenizer, prompts: Sequence[Text], completions: Sequence[Text]) -> float:
    """Mean per-token KL(teacher || student) of the next-token distributions over the completion tokens.

    The two models must share the vocabulary. Distillation should lower it on held-out prompts.
    """
    device = next(student.parameters()).device
    total, count = 0.0, 0
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids, full_ids = _prompt_and_full_ids(tokenizer, prompt, completion)
        start = _common_prefix(prompt_ids, full_ids)
        ids = torch.tensor([full_ids], device=device)
        # Position t predicts token t + 1, so the completion's tokens are predicted from positions start - 1 on.
        teacher_logprobs = teacher(input_ids=ids).logits[0, start - 1 : -1].float().log_softmax(-1)
        student_logprobs = student(input_ids=ids).logits[0, start - 1 : -1].float().log_softmax(-1)
        kl = F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="none").sum(-1)
        total += kl.sum().item()
        count += kl.numel()
    return total / count


# ------------------------------------------------------------------------------------------------ recipe plumbing


@dataclass
class AlignmentDataArguments:
    """Where an alignment recipe's data comes from, and the held-out rows it measures before and after training."""

    train_file: str | None = field(default=None, metadata={"help": "Local .jsonl/.json/.parquet/.csv training file."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset name (instead of --train_file)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split of the Hub dataset to train on."})
    eval_file: str | None = field(default=None, metadata={"help": "Held-out file; without it rows are split off."})
    heldout_size: int = field(default=64, metadata={"help": "Rows split off the training data when no --eval_file."})


def load_train_and_heldout(data_args: AlignmentDataArguments, seed: int):
    """`(train, heldout)` datasets: held-out rows from --eval_file, or `heldout_size` rows split off the training data."""
    from .finetuning import load_dataset_source

    train = load_dataset_source(data_args.train_file, data_args.dataset_name, data_args.dataset_config,
                                data_args.dataset_split)  # fmt: skip
    if data_args.eval_file is not None:
        return train, load_dataset_source(data_args.eval_file)
    if not 0 < data_args.heldout_size < len(train):
        raise ValueError(
            f"--heldout_size {data_args.heldout_size} must be between 1 and the number of training rows minus one "
            f"({len(train) - 1}); or pass --eval_file."
        )
    split = train.train_test_split(test_size=data_args.heldout_size, seed=seed)
    return split["train"], split["test"]


def check_full_model_folder(path: str, role: str = "model") -> None:
    """Raise `ValueError` if `path` is a LoRA adapter folder: alignment recipes start from standalone models."""
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise ValueError(
            f"The {role} at {path!r} is a LoRA adapter, not a standalone model. Merge it into its base first "
            "(recipes/sft.py --merge, or hf_simplegpt.finetuning.merge_adapter) and pass the merged folder; "
            "add --use_peft to train a new adapter on top."
        )


def check_same_vocabulary(student_path: str, teacher_path: str) -> None:
    """Raise `ValueError` unless student and teacher share a vocabulary (distillation compares full distributions)."""
    student, teacher = AutoConfig.from_pretrained(student_path), AutoConfig.from_pretrained(teacher_path)
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"The student ({student_path}) has vocab_size {student.vocab_size} but the teacher ({teacher_path}) has "
            f"{teacher.vocab_size}. Distillation matches the teacher's next-token distribution token by token, so "
            "both must use the same tokenizer: build the student with the teacher's tokenizer."
        )
    student_vocab = AutoTokenizer.from_pretrained(student_path).get_vocab()
    teacher_vocab = AutoTokenizer.from_pretrained(teacher_path).get_vocab()
    if student_vocab != teacher_vocab:
        differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()))[:5]
        raise ValueError(
            f"The student ({student_path}) and teacher ({teacher_path}) tokenizers have the same size but map tokens "
            f"differently (e.g. {differing}). Build the student with the teacher's tokenizer."
        )


def plot_reward_curve(log_history: Iterable[dict], path: str, title: str = "Reward during RL") -> str:
    """Save a PNG of the logged reward (total, and each `rewards/<name>/mean` if several) and KL against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(log_history)
    per_function = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    # With one reward function the total is that function's reward: no second panel for it.
    keys = ["reward", *(per_function if len(per_function) > 1 else []), "kl"]
    series = {k: [(h["step"], h[k]) for h in history if k in h] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError("The log history has no reward entries to plot; was logging_steps larger than max_steps?")
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        ax.plot(*zip(*points), "o-")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_metrics_and_card(output_dir: str, metrics: dict, *, method: str, base_model: str, summary: str,
                          hyperparameters: dict, template: str = "model_card.md") -> None:
    """Write `alignment_metrics.json` and a model card (README.md) rendered from `model_cards/<template>`."""
    from .hub import write_model_card

    with open(os.path.join(output_dir, "alignment_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    measured = "\n".join(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items())
    write_model_card(
        output_dir,
        template,
        base_model=base_model,
        tags=["trl", method],
        model_summary=summary,
        training_procedure=f"Trained with `recipes/{method}.py` (TRL). Measured on held-out data:\n\n{measured}",
        hyperparameters=hyperparameters,
    )
