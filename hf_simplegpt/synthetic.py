"""Synthetic tasks whose goal can be measured, for the alignment demo and the tests: `KeywordTask` (answers should
name a keyword), and `write_jsonl` to store its rows as a data file the recipes read.
"""

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .rewards import Text

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


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write one JSON object per line; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
