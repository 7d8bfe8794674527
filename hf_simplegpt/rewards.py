"""Rewards for RL: the project's reward functions (by name) and the reward-model scorer, as TRL keeps `trl/rewards/`.

A reward function has TRL's signature, `f(prompts, completions, **kwargs) -> list[float]`. Completions are plain
strings or conversational (lists of `{"role", "content"}` messages).
"""

import functools
import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from .generation import context_length, keep_last_tokens

Message = dict[str, str]
Text = str | list[Message]  # one prompt or completion, plain or conversational


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


# The reward functions a config may name. Anything else is Python code from outside the project, which runs only with
# --allow_custom_reward_funcs: a YAML file must not be able to import and call arbitrary code unnoticed.
REWARD_FUNCTIONS: dict[str, Callable] = {"keyword": keyword_reward}


def load_reward_function(name: str, kwargs: dict[str, Any] | None = None, allow_custom: bool = False) -> Callable:
    """A reward function by its registered name (`REWARD_FUNCTIONS`), or, with `allow_custom`, by a dotted import
    path `"package.module.function"` (or `"package.module:function"`).

    `kwargs` are bound with `functools.partial`; TRL still logs the reward under the function's own name.
    """
    if name in REWARD_FUNCTIONS:
        func = REWARD_FUNCTIONS[name]
    elif not allow_custom:
        raise ValueError(
            f"Reward function {name!r} is not one of the project's ({sorted(REWARD_FUNCTIONS)}). A dotted path imports "
            "and runs Python code from outside the project: pass --allow_custom_reward_funcs true if you trust it."
        )
    else:
        module_name, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
        if not sep or not module_name or not attr:
            raise ValueError(
                f"Reward function {name!r} must be a registered name or a dotted path 'package.module.function'."
            )
        try:
            func = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"Cannot import reward function {name!r}: {e}. Use 'package.module.function'.") from e
        if not callable(func):
            raise ValueError(f"Reward function {name!r} is a {type(func).__name__}, not a callable.")
    return functools.partial(func, **kwargs) if kwargs else func


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
    """Load a reward model folder written by `hf-simplegpt reward` (or any 1-label sequence classifier).

    Returns `(model, tokenizer)`, the model in eval mode on `device`. Raises `ValueError` if the folder holds
    another kind of model (a causal LM would silently get a random score head), has more than one label, or its
    tokenizer has no pad token.
    """
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} is not a model folder ({e}). Pass the output_dir of hf-simplegpt reward.") from e
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{path!r} holds a {architectures or config.model_type} model, not a sequence-classification reward "
            "model. Train one with hf-simplegpt reward (it starts from a causal LM checkpoint) and pass its output_dir."
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
            "at padding. Retrain with hf-simplegpt reward, which adds a dedicated pad token."
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
        # The score is read at the last token, so an overlong sequence loses the start of its prompt.
        ids = keep_last_tokens(
            [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)],
            context_length(self.model),
            "sequences scored by the reward model",
        )
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


@dataclass
class RewardArguments:
    """Where an online RL job's (grpo, rloo) rewards come from, and how long the held-out completions it scores are."""

    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reward model folder written by hf-simplegpt reward."}
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"Reward functions by name ({sorted(REWARD_FUNCTIONS)}), or dotted import paths "
            "with --allow_custom_reward_funcs."
        },
    )
    reward_func_kwargs: str | None = field(
        default=None,
        metadata={"help": 'JSON object: keyword arguments per reward function, e.g. {"keyword": {"keyword": "blue"}}.'},
    )
    allow_custom_reward_funcs: bool = field(
        default=False,
        metadata={
            "help": "Allow --reward_funcs to import Python code by dotted path (it runs in this job). On the "
            "command line only: a --config file cannot set it (training.COMMAND_LINE_ONLY)."
        },
    )
    eval_max_new_tokens: int = field(default=24, metadata={"help": "Completion length when measuring held-out reward."})

    def __post_init__(self):
        if self.eval_max_new_tokens < 1:
            raise ValueError(f"--eval_max_new_tokens {self.eval_max_new_tokens} must be at least 1.")


def build_reward_funcs(args: RewardArguments, device) -> list:
    """The reward model scorer (if a folder is given) followed by the named Python reward functions."""
    funcs = []
    if args.reward_model_name_or_path:
        funcs.append(RewardModelScorer.from_pretrained(args.reward_model_name_or_path, device=device))
    kwargs = json.loads(args.reward_func_kwargs) if args.reward_func_kwargs else {}
    unknown = sorted(set(kwargs) - set(args.reward_funcs))
    if unknown:
        raise ValueError(f"--reward_func_kwargs names {unknown}, which are not in --reward_funcs {args.reward_funcs}.")
    funcs += [
        load_reward_function(name, kwargs.get(name), args.allow_custom_reward_funcs) for name in args.reward_funcs
    ]
    if not funcs:
        raise ValueError(
            "No reward: pass --reward_model_name_or_path (an hf-simplegpt reward output) and/or --reward_funcs."
        )
    return funcs
