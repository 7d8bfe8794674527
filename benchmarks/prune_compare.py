"""Pruning + distillation against training the same shape from scratch, and pruned models as speculative-decoding
drafts, on a model pretrained by the project's own recipe.

1. (a) `hf-simplegpt pretrain`: a 6-layer, 256-wide SimpleGPT (8 heads of 32, MLP 1024, 2048-token BPE, context 128)
   on Tiny Shakespeare (or the built-in corpus), 400 steps of 16 blocks.
2. `hf-simplegpt prune --keep_ratio 0.5`: half the heads and MLP neurons of every layer, then (c) recovery by logit
   distillation for `--recovery-steps`; (b) is the same pruned model before recovery.
3. (d) `hf-simplegpt pretrain` of (c)'s exact shape from a fresh initialisation, on the same number of tokens (the
   recovery's steps x batch x context), at the recovery's learning rate and at the teacher's pretraining rate (the
   better one is reported).
4. Every row: parameters, held-out loss and perplexity (the pretraining run's validation split), forward tokens/s
   (batch 8 x 128) and greedy decode tokens/s (batch 1, 96 new tokens) on the CPU, runs interleaved across models.
5. Speculative decoding at batch 1: (a) generates greedily alone and with each draft as `assistant_model` (the
   pruned-and-recovered (c), and depth-pruned drafts of 2 and 1 blocks, recovered for `--draft-recovery-steps`);
   the tokens must be identical. Reports tokens/s, the draft's acceptance rate and its cost per token relative to
   (a), under transformers' default draft settings and under short adaptive rounds (DRAFT_SETTINGS).
6. The crossover: the same measurement with the target made slower by a fixed delay per forward call (a larger
   target, whose batch-1 forward is bound by reading its weights, costs about the same for 1 or a few tokens), to
   find the target latency per token from which the draft pays.

    python benchmarks/prune_compare.py                    # about half an hour on 2 CPU cores
    python benchmarks/prune_compare.py --reuse --publish  # reuse trained folders; update results/

Writes <output-dir>/results.json and results.md (`--publish`: benchmarks/results/prune-compare.*).
"""

import argparse
import json
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_simplegpt.compression import PruningPlan, language_model_loss, prune_model
from hf_simplegpt.corpus import CorpusArguments, heldout_blocks
from hf_simplegpt.recipes import pretrain, prune
from hf_simplegpt.timing import interleaved_medians

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS_DIR = REPO / "benchmarks" / "results"
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]
# The draft's generation_config decides how many tokens it proposes per round. transformers' defaults propose up to
# 20 and stop as soon as the draft's top probability falls below 0.4; the short adaptive rounds start at 5, never
# stop early, and grow by 2 after a fully accepted round and shrink by 1 otherwise.
DRAFT_SETTINGS = {
    "defaults": {
        "num_assistant_tokens": 20,
        "num_assistant_tokens_schedule": "constant",
        "assistant_confidence_threshold": 0.4,
    },
    "adaptive": {
        "num_assistant_tokens": 5,
        "num_assistant_tokens_schedule": "heuristic",
        "assistant_confidence_threshold": 0.0,
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train-file",
        default=str(SHAKESPEARE) if SHAKESPEARE.is_file() else None,
        help="training text (default: Tiny Shakespeare where present, else the built-in corpus)",
    )
    parser.add_argument("--output-dir", type=Path, default=REPO / "benchmarks" / "out" / "prune_compare")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="blocks per training step, every run")
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--pretrain-lr", type=float, default=2e-3)
    parser.add_argument("--keep-ratio", type=float, default=0.5)
    parser.add_argument("--recovery-steps", type=int, default=200)
    parser.add_argument("--recovery-lr", type=float, default=1e-3)
    parser.add_argument("--draft-layers", default="2,1", help="blocks kept by the depth-pruned drafts ('' for none)")
    parser.add_argument("--draft-recovery-steps", type=int, default=100)
    parser.add_argument(
        "--target-delays-ms",
        default="0,10,30",
        help="extra time per target forward call for the crossover sweep ('' to skip it)",
    )
    parser.add_argument("--prompts", type=int, default=8, help="held-out prompts for decoding, batch 1")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 is steadier than 2 on a shared 2-core machine"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse trained folders already in --output-dir")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/prune-compare.*")
    return parser.parse_args(argv)


def trained(folder: Path, reuse: bool) -> bool:
    return reuse and (folder / "model.safetensors").is_file()


def run_timed(job, argv: list, folder: Path, reuse: bool) -> float | None:
    """Run a recipe's main(argv) unless `reuse` finds its output; returns the wall-clock seconds (None if reused)."""
    if trained(folder, reuse):
        return None
    start = time.perf_counter()
    job.main([*map(str, argv), *QUIET])
    return time.perf_counter() - start


def data_flags(args) -> list:
    flags = ["--data_cache_dir", args.output_dir / "cache"]
    return flags + (["--train_file", args.train_file] if args.train_file else [])


@torch.no_grad()
def speeds(models: dict, args, heldout: torch.Tensor) -> dict[str, dict[str, float]]:
    """Forward tokens/s (batch 8 x context) and greedy decode tokens/s (batch 1), runs interleaved over models."""
    batch = heldout[:8]
    prompt = heldout[:1, : args.prompt_length]
    kwargs = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    forward = interleaved_medians({name: partial(model, batch) for name, model in models.items()}, args.repeats, 1)
    decode = interleaved_medians(
        {name: partial(model.generate, prompt, **kwargs) for name, model in models.items()}, args.repeats, 1
    )
    return {
        name: {
            "forward_tokens_per_s": batch.numel() / forward[name],
            "decode_tokens_per_s": args.new_tokens / decode[name],
        }
        for name in models
    }


class CallCounter:
    """Counts forward calls of a model (the target verifies once per round; the draft proposes one token per call)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self.count)

    def count(self, *_):
        self.calls += 1


@torch.no_grad()
def speculative(target, drafts: dict, args, heldout: torch.Tensor) -> dict:
    """Greedy decoding of held-out prompts by `target` alone and with each draft as `assistant_model`, interleaved.

    Acceptance rate = accepted draft tokens / proposed draft tokens; every target call adds one token of its own, so
    accepted = new tokens - target calls.
    """
    prompts = [heldout[i : i + 1, : args.prompt_length] for i in range(args.prompts)]
    kwargs = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    for draft in drafts.values():  # warm-up, before anything is counted or timed
        target.generate(prompts[0], assistant_model=draft, do_sample=False, max_new_tokens=8)
    outputs = {}
    target_calls = CallCounter(target)
    proposals = {name: CallCounter(draft) for name, draft in drafts.items()}
    counts = {name: {"proposed": 0, "target_calls": 0} for name in drafts}

    def decode_all(name: str, assistant=None):
        before = (target_calls.calls, proposals[name].calls if assistant is not None else 0)
        outputs[name] = [target.generate(p, assistant_model=assistant, **kwargs).tolist() for p in prompts]
        if assistant is not None:
            counts[name]["target_calls"] += target_calls.calls - before[0]
            counts[name]["proposed"] += proposals[name].calls - before[1]

    runs = {"none": partial(decode_all, "none"), **{name: partial(decode_all, name, d) for name, d in drafts.items()}}
    seconds = interleaved_medians(runs, args.repeats, warmup=0)
    for counter in [target_calls, *proposals.values()]:
        counter.handle.remove()
    tokens = args.new_tokens * len(prompts)
    result = {
        "prompts": len(prompts),
        "new_tokens": args.new_tokens,
        "plain_tokens_per_s": tokens / seconds["none"],
        "drafts": {},
    }
    for name in drafts:
        c = counts[name]
        accepted = tokens * args.repeats - c["target_calls"]
        result["drafts"][name] = {
            "identical_to_plain_greedy": outputs[name] == outputs["none"],
            "acceptance_rate": accepted / max(c["proposed"], 1),
            "tokens_per_target_call": tokens * args.repeats / c["target_calls"],
            "tokens_per_s": tokens / seconds[name],
            "speedup": seconds["none"] / seconds[name],
        }
    return result


def with_settings(drafts: dict, settings: dict) -> None:
    for draft in drafts.values():
        for key, value in settings.items():
            setattr(draft.generation_config, key, value)


class Delay:
    """Makes every forward call of `model` take `seconds` longer while installed."""

    def __init__(self, model, seconds: float):
        self.handle = model.register_forward_pre_hook(lambda *_: time.sleep(seconds)) if seconds else None

    def remove(self):
        if self.handle is not None:
            self.handle.remove()


def crossover(target, draft, args, heldout: torch.Tensor) -> list[dict]:
    """Plain against assisted decoding with `draft`, per draft setting, with the target slowed by each delay."""
    points = []
    sweep = argparse.Namespace(**{**vars(args), "prompts": max(1, args.prompts // 2), "repeats": 1})
    for delay_ms in [float(d) for d in args.target_delays_ms.split(",") if d]:
        delay = Delay(target, delay_ms / 1000)
        for setting, values in DRAFT_SETTINGS.items():
            with_settings({"draft": draft}, values)
            result = speculative(target, {"draft": draft}, sweep, heldout)
            d = result["drafts"]["draft"]
            points.append(
                {
                    "delay_ms": delay_ms,
                    "setting": setting,
                    "target_ms_per_token": 1000 / result["plain_tokens_per_s"],
                    "tokens_per_target_call": d["tokens_per_target_call"],
                    "speedup": d["speedup"],
                    "identical_to_plain_greedy": d["identical_to_plain_greedy"],
                }
            )
        delay.remove()
    return points


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def table(rows: list[dict]) -> str:
    return markdown(
        [
            "model",
            "parameters",
            "held-out loss",
            "perplexity",
            "forward tokens/s",
            "decode tokens/s (batch 1)",
            "training tokens",
        ],
        [
            [
                r["name"],
                f"{r['parameters']:,}",
                f"{r['loss']:.4f}",
                f"{r['perplexity']:.2f}",
                f"{r['forward_tokens_per_s']:,.0f}",
                f"{r['decode_tokens_per_s']:,.1f}",
                r["tokens"],
            ]
            for r in rows
        ],
    )


def same(draft: dict) -> str:
    return "yes" if draft["identical_to_plain_greedy"] else "NO"


def spec_table(spec: dict[str, dict], costs: dict, losses: dict) -> str:
    rows = [
        [
            name,
            f"{losses[name]:.4f}",
            f"{costs[name]:.2f}",
            setting,
            f"{d['acceptance_rate']:.2f}",
            f"{d['tokens_per_target_call']:.2f}",
            f"{d['tokens_per_s']:.1f} ({result['plain_tokens_per_s']:.1f})",
            f"{d['speedup']:.2f}×",
            same(d),
        ]
        for name in costs
        for setting, result in spec.items()
        for d in [result["drafts"][name]]
    ]
    return markdown(
        [
            "draft",
            "held-out loss",
            "draft cost per token / target's",
            "settings",
            "acceptance rate",
            "tokens per target call",
            "tokens/s (plain)",
            "speedup",
            "identical tokens",
        ],
        rows,
    )


def crossover_table(points: list[dict]) -> str:
    rows = [
        [
            f"{p['delay_ms']:g} ms",
            f"{p['target_ms_per_token']:.1f}",
            p["setting"],
            f"{p['tokens_per_target_call']:.2f}",
            f"{p['speedup']:.2f}×",
            same(p),
        ]
        for p in points
    ]
    return markdown(
        [
            "added per target call",
            "target ms/token",
            "settings",
            "tokens per target call",
            "speedup",
            "identical tokens",
        ],
        rows,
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args) -> dict:
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = data_flags(args)
    tokens_per_step = args.batch * args.context
    wall = {}

    teacher_dir = out / "teacher"
    wall["pretrain (a)"] = run_timed(
        pretrain,
        [
            *data,
            "--output_dir",
            teacher_dir,
            "--vocab_size",
            args.vocab,
            "--hidden_size",
            args.hidden,
            "--num_hidden_layers",
            args.layers,
            "--num_attention_heads",
            args.heads,
            "--max_position_embeddings",
            args.context,
            "--dropout",  # the published teacher's (the job's default until issue 20)
            0.1,
            "--per_device_train_batch_size",
            args.batch,
            "--learning_rate",
            args.pretrain_lr,
            "--max_steps",
            args.pretrain_steps,
            "--eval_steps",
            100,
            "--logging_steps",
            50,
            "--save_strategy",
            "no",
            "--num_sample_generations",
            0,
        ],
        teacher_dir,
        args.reuse,
    )

    recovery = [
        "--model_name_or_path",
        teacher_dir,
        *data,
        "--recovery_steps",
        args.recovery_steps,
        "--learning_rate",
        args.recovery_lr,
        "--per_device_train_batch_size",
        args.batch,
        "--logging_steps",
        50,
    ]
    pruned_dir = out / "pruned"
    wall["prune + recovery (c)"] = run_timed(
        prune, [*recovery, "--keep_ratio", args.keep_ratio, "--output_dir", pruned_dir], pruned_dir, args.reuse
    )
    report = json.loads((pruned_dir / "pruning.json").read_text())
    draft_dirs = {}
    for layers in [int(n) for n in args.draft_layers.split(",") if n]:
        draft_dirs[f"{layers}-block draft"] = folder = out / f"draft-{layers}-blocks"
        wall[f"prune + recovery, {layers}-block draft"] = run_timed(
            prune,
            [
                *recovery,
                "--recovery_steps",
                args.draft_recovery_steps,
                "--keep_ratio",
                1.0,
                "--drop_layers",
                args.layers - layers,
                "--output_dir",
                folder,
            ],
            folder,
            args.reuse,
        )

    shape = report["shape"]
    head_dim = args.hidden // args.heads
    scratch = {}
    for lr in sorted({args.recovery_lr, args.pretrain_lr}):
        folder = out / f"scratch-lr{lr:g}"
        wall[f"from scratch (d), lr {lr:g}"] = run_timed(
            pretrain,
            [
                *data,
                "--output_dir",
                folder,
                "--tokenizer_name",
                teacher_dir,
                "--hidden_size",
                args.hidden,
                "--num_hidden_layers",
                shape["num_hidden_layers"],
                "--num_attention_heads",
                shape["num_attention_heads"],
                "--head_dim",
                head_dim,
                "--intermediate_size",
                shape["intermediate_size"],
                "--max_position_embeddings",
                args.context,
                "--dropout",
                0,
                "--per_device_train_batch_size",
                args.batch,
                "--learning_rate",
                lr,
                "--max_steps",
                args.recovery_steps,
                "--eval_strategy",
                "no",
                "--eval_on_start",
                "false",
                "--logging_steps",
                50,
                "--save_strategy",
                "no",
                "--num_sample_generations",
                0,
            ],
            folder,
            args.reuse,
        )
        scratch[lr] = folder

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    # The held-out blocks exactly as the recipes build them (same cleaning, split and seed).
    corpus = CorpusArguments(train_file=args.train_file, data_cache_dir=str(args.output_dir / "cache"))
    heldout = heldout_blocks(corpus, tokenizer, args.context, seed=42)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    models = {
        "(a) original": teacher,
        "(b) pruned, no recovery": prune_model(teacher, PruningPlan(**report["kept"])).eval(),
        "(c) pruned + distillation": AutoModelForCausalLM.from_pretrained(pruned_dir).eval(),
    }
    scratch_losses = {}
    for lr, folder in scratch.items():
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        scratch_losses[lr] = language_model_loss(model, heldout)
        if lr == min(scratch_losses, key=scratch_losses.get):
            models["(d) same shape, from scratch"] = model
    best_lr = min(scratch_losses, key=scratch_losses.get)
    recovery_tokens = report["recovery"]["tokens"]
    pretrain_tokens = args.pretrain_steps * tokens_per_step
    tokens = {
        "(a) original": f"{pretrain_tokens:,} (pretraining)",
        "(b) pruned, no recovery": "0",
        "(c) pruned + distillation": f"{recovery_tokens:,}",
        "(d) same shape, from scratch": f"{args.recovery_steps * tokens_per_step:,}",
    }
    measured = speeds(models, args, heldout)
    rows = []
    for name, model in models.items():
        loss = language_model_loss(model, heldout)
        rows.append(
            {
                "name": name,
                "parameters": model.num_parameters(),
                "loss": loss,
                "perplexity": math.exp(loss),
                "tokens": tokens[name],
                **measured[name],
            }
        )

    drafts = {"(c) pruned + distillation": models["(c) pruned + distillation"]}
    drafts.update({name: AutoModelForCausalLM.from_pretrained(folder).eval() for name, folder in draft_dirs.items()})
    draft_losses = {name: language_model_loss(draft, heldout) for name, draft in drafts.items()}
    draft_speeds = speeds({"target": teacher, **drafts}, args, heldout)
    costs = {
        name: draft_speeds["target"]["decode_tokens_per_s"] / draft_speeds[name]["decode_tokens_per_s"]
        for name in drafts
    }
    spec = {}
    for setting, values in DRAFT_SETTINGS.items():
        with_settings(drafts, values)
        spec[setting] = speculative(teacher, drafts, args, heldout)
    best = max(drafts, key=lambda name: spec["adaptive"]["drafts"][name]["speedup"])
    points = crossover(teacher, drafts[best], args, heldout)

    load = os.getloadavg()
    result = {
        "setup": {
            "train_file": args.train_file or "built-in corpus",
            "shape": f"{args.layers} layers x {args.hidden} "
            f"wide, {args.heads} heads of {head_dim}, MLP {4 * args.hidden}, vocab {len(tokenizer)}, context "
            f"{args.context}",
            "pruned_shape": shape,
            "keep_ratio": args.keep_ratio,
            "heldout_tokens": heldout.shape[0] * (args.context - 1),
            "threads": args.threads,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.machine(),
            "load_average_at_end": [round(x, 2) for x in load],
        },
        "rows": rows,
        "scratch_losses_by_lr": {f"{lr:g}": loss for lr, loss in scratch_losses.items()},
        "scratch_best_lr": best_lr,
        "speculative": spec,
        "draft_cost": costs,
        "draft_heldout_loss": draft_losses,
        "crossover": {"draft": best, "points": points},
        "wall_seconds": {k: (round(v, 1) if v is not None else "reused") for k, v in wall.items()},
        "total_wall_seconds": round(time.perf_counter() - started, 1),
    }
    markdown = "\n\n".join(
        [
            f"Setup: {result['setup']['shape']}, trained on {result['setup']['train_file']}; pruned to "
            f"{shape['num_attention_heads']} heads and {shape['intermediate_size']} MLP neurons per layer. Held-out: "
            f"{result['setup']['heldout_tokens']:,} predicted tokens. CPU ({platform.machine()}, {args.threads} thread(s)), "
            f"torch {torch.__version__}, transformers {transformers.__version__}, float32; load average at the end "
            f"{', '.join(f'{x:.2f}' for x in load)}.",
            table(rows),
            f"(d) is the better of two learning rates: held-out loss {', '.join(f'{v:.4f} at {k}' for k, v in result['scratch_losses_by_lr'].items())}.",
            f"Speculative decoding, batch 1, greedy, {args.prompts} held-out prompts of {args.prompt_length} tokens, "
            f"{args.new_tokens} new tokens each, median of {args.repeats} interleaved rounds:",
            spec_table(spec, costs, draft_losses),
            f"Crossover ({best}, {max(1, args.prompts // 2)} prompts, one round): the target slowed by a fixed delay "
            "per forward call, as a larger target would be:",
            crossover_table(points),
            "Wall clock (s): "
            + ", ".join(f"{k} {v}" for k, v in result["wall_seconds"].items())
            + f"; total {result['total_wall_seconds']}.",
        ]
    )
    targets = [out] + ([RESULTS_DIR] if args.publish else [])
    for folder in targets:
        name = "prune-compare" if folder == RESULTS_DIR else "results"
        (folder / f"{name}.json").write_text(json.dumps(result, indent=2))
        (folder / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    return result


if __name__ == "__main__":
    main()
