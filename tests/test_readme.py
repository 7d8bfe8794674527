"""README.md's examples, run as written, in order, in a folder laid out like a fresh clone (recipes/ beside them).

A code block is skipped only when the line above it says why: `<!-- not run by tests: reason -->`. Inputs the README
assumes the reader has are made here: `my_corpus.txt` is Tiny Shakespeare (a real text; a public-domain excerpt is
used where it is absent) but its last tenth, `my_held_out.txt` that last tenth, and `outputs/pretrain-default` a small
model standing in for the Quickstart's output, with the generation_config pretraining saves (sampling).
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.generation import set_sampling_defaults
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer
from tests.conftest import REPO_ROOT, SHAKESPEARE, TINY_CORPUS

SKIP = re.compile(r"<!-- not run by tests: (.+?) -->\s*$")
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)

EXCERPT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.
"""


def code_blocks(path: Path) -> list[tuple[str, str, str | None]]:
    """(language, code, reason it is not run or None) for each fenced block of a markdown file."""
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.match(before)
        blocks.append((match.group(1), match.group(2), skip.group(1) if skip else None))
    return blocks


def test_every_skipped_block_says_why_and_what_runs_it_instead():
    blocks = code_blocks(REPO_ROOT / "README.md")
    assert blocks and all(lang in ("bash", "python", "", "text") for lang, _, _ in blocks)
    skipped = [reason for lang, _, reason in blocks if reason and lang in ("bash", "python")]
    # The Quickstart runs in CI; anything else too slow or needing a server is run by a named test.
    assert all(".ci/run" in reason or "tests/" in reason for reason in skipped), skipped


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clone")
    (root / "recipes").symlink_to(REPO_ROOT / "recipes")
    corpus = SHAKESPEARE.read_text() if SHAKESPEARE.is_file() else (EXCERPT + "\n") * 40 + "\n\n".join(TINY_CORPUS)
    cut = len(corpus) - len(corpus) // 10
    (root / "my_corpus.txt").write_text(corpus[:cut])
    (root / "my_held_out.txt").write_text(corpus[cut:])  # text the model does not train on
    tokenizer = train_tokenizer(TINY_CORPUS, vocab_size=300, model_max_length=128)
    torch.manual_seed(0)
    config = SimpleGPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        max_seq_len=128,
        **special_token_ids(tokenizer),
    )
    model = SimpleGPTForCausalLM(config)
    set_sampling_defaults(model)  # what `hf-simplegpt pretrain` saves
    model.save_pretrained(root / "outputs" / "pretrain-default")
    tokenizer.save_pretrained(root / "outputs" / "pretrain-default")
    return root


def run_block(lang: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_CACHE=str(cwd / ".cache"),
        TOKENIZERS_PARALLELISM="false",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    )
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_examples_run_as_written(workspace):
    ran, printed = 0, {}
    for lang, code, reason in code_blocks(REPO_ROOT / "README.md"):
        if reason or lang not in ("bash", "python"):
            continue
        result = run_block(lang, code, workspace)
        assert result.returncode == 0, f"README block failed:\n{code}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        printed[code] = result.stdout
        ran += 1
    assert ran >= 4
    # The pipeline example, with the folder's defaults, prints its prompt and then text, not only whitespace.
    (pipeline_out,) = [out for code, out in printed.items() if 'pipeline("text-generation"' in code]
    assert pipeline_out.startswith("The for statement")
    assert pipeline_out[len("The for statement") :].strip(), repr(pipeline_out)
    # What the examples claim: the tiny run wrote its samples and card, SFT merged, evaluation wrote results.
    assert (workspace / "outputs" / "tiny" / "README.md").is_file()
    assert "Sample continuations" in (workspace / "outputs" / "tiny" / "README.md").read_text()
    assert (workspace / "outputs" / "sft-lora" / "merged" / "model.safetensors").is_file()
    perplexity = json.loads((workspace / "outputs" / "eval-tiny" / "results.json").read_text())["perplexity"]
    assert perplexity["num_tokens"] > 0 and 1 < perplexity["perplexity"] < float("inf")
    # The prune example: half the heads and neurons go, and distillation recovers part of the loss they took.
    pruning = json.loads((workspace / "outputs" / "tiny-pruned" / "pruning.json").read_text())
    assert pruning["parameters"]["pruned"] < pruning["parameters"]["source"]
    losses = pruning["heldout_loss"]
    assert all(math.isfinite(v) for v in losses.values()) and losses["recovered"] < losses["pruned"], losses


def test_every_results_file_the_docs_cite_exists():
    """A number quoted beside `results/<name>` has its evidence: the .json and the .md a benchmark wrote (a glob such
    as `quantize-*-cuda` must match at least one)."""
    docs = [REPO_ROOT / "README.md", REPO_ROOT / "benchmarks" / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
    cited = {
        (doc.name, stem)
        for doc in docs
        for stem in re.findall(r"results/([\w*-]+)\.(?:md|json|\*|\{json,md\})", doc.read_text())
    }
    assert len(cited) >= 20, cited
    results = REPO_ROOT / "benchmarks" / "results"
    for doc, stem in sorted(cited):
        markdown = sorted(results.glob(f"{stem}.md"))
        assert markdown, f"{doc} cites benchmarks/results/{stem}.md, which does not exist"
        for md in markdown:
            assert md.with_suffix(".json").is_file(), f"{md.name} has no {md.stem}.json beside it"
