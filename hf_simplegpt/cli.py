"""The `hf-simplegpt` command: one subcommand per job, running the same code with the same flags as the recipe
scripts (`hf-simplegpt pretrain ...` == `accelerate launch recipes/pretrain.py ...`).

    hf-simplegpt pretrain --config recipes/configs/pretrain_tiny.yaml --train_file my.txt --output_dir out
    hf-simplegpt sft --multi_gpu --num_processes 2 --config sft_tiny.yaml ...   # launcher flags go to accelerate
    hf-simplegpt pretrain --accelerate_config fsdp ...                          # recipes/accelerate/fsdp.yaml
    hf-simplegpt pretrain --ray_workers 4 ...                                   # Ray Train workers (hf_simplegpt.ray_train)

Training jobs start through `accelerate launch`, as `trl sft` does, so multi-process and multi-GPU runs work; the
other jobs run in this process. `--config` takes a YAML file or the name of a bundled config
(`hf-simplegpt pretrain --config pretrain_tiny.yaml` works from an installed wheel too).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Job:
    module: str  # a module with main(argv)
    help: str
    launched: bool  # through `accelerate launch` (training jobs), else run in this process


JOBS = {
    "pretrain": Job("hf_simplegpt.recipes.pretrain", "pretrain a SimpleGPT from scratch (transformers Trainer)", True),
    "sft": Job("hf_simplegpt.recipes.sft", "supervised fine-tuning, full or LoRA/QLoRA (TRL SFTTrainer)", True),
    "reward": Job("hf_simplegpt.recipes.reward", "train a reward model on preference pairs (TRL RewardTrainer)", True),
    "grpo": Job("hf_simplegpt.recipes.grpo", "online RL with GRPO against a reward model or functions (TRL)", True),
    "rloo": Job("hf_simplegpt.recipes.rloo", "online RL with RLOO against a reward model or functions (TRL)", True),
    "dpo": Job("hf_simplegpt.recipes.dpo", "direct preference optimisation (TRL DPOTrainer)", True),
    "distill": Job("hf_simplegpt.recipes.distill", "on-policy distillation into a smaller student (TRL)", True),
    "prune": Job(
        "hf_simplegpt.recipes.prune", "structured pruning + distillation recovery (Minitron-style, TRL)", True
    ),
    "contrastive": Job(
        "hf_simplegpt.recipes.contrastive",
        "train a sentence encoder on text pairs, in-batch negatives (sentence-transformers)",
        True,
    ),
    "evaluate": Job("hf_simplegpt.recipes.eval", "perplexity, MMLU, BLEU, bias, safety, a holistic report", False),
    "arena": Job(
        "hf_simplegpt.evaluation.arena",
        "blind side-by-side votes on 2+ models (gradio), exported as DPO "
        "preference data, with win rates and Bradley-Terry scores",
        False,
    ),
    "quantize": Job(
        "hf_simplegpt.recipes.quantize", "quantize a SimpleGPT with torchao and compare it with the original", False
    ),
    "export": Job(
        "hf_simplegpt.recipes.export",
        "export a SimpleGPT to ExecuTorch (.pte) or GGUF (llama.cpp) and check it decodes as generate does",
        False,
    ),
    "convert": Job("hf_simplegpt.recipes.convert", "convert a GPT-2 checkpoint into a SimpleGPT", False),
    "alignment-demo": Job(
        "hf_simplegpt.recipes.alignment_demo",
        "SFT -> reward -> GRPO/RLOO, DPO, distillation on a synthetic task, measured",
        False,
    ),
    "serve": Job(
        "hf_simplegpt.serving.server", "an OpenAI-compatible server (continuous batching, chat page, Ray)", False
    ),
    "chat-ui": Job("hf_simplegpt.serving.chat_page", "a chat page for any OpenAI-compatible server (gradio)", False),
    "make-pairs": Job(
        "hf_simplegpt.recipes.make_pairs", "write contrastive pairs from a text file or an MMLU folder", False
    ),
    "make-sft-data": Job("hf_simplegpt.recipes.make_sft_toy_data", "write a toy arithmetic chat dataset", False),
}

# Flags that `accelerate launch` and the training jobs both take go to the job (as in TRL's CLI, the job's parser
# wins); tests/test_cli.py checks this is every such flag.
JOB_OWNED_FLAGS = ("--debug", "--gradient_accumulation_steps")


def launch_flags() -> dict[str, int]:
    """The flags handed to `accelerate launch`, with the number of values each takes: every flag of its own parser
    but the jobs' (`JOB_OWNED_FLAGS`) and --module (set here), plus --accelerate_config (a file, or the name of one
    in recipes/accelerate/: multi_gpu, fsdp, ...). Every other flag goes to the job."""
    from accelerate.commands.launch import launch_command_parser

    flags = {"--accelerate_config": 1}
    for action in launch_command_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in (*JOB_OWNED_FLAGS, "--help", "--module", "--no_python"):
                flags[option] = 0 if action.nargs == 0 else 1
    return flags


def split_launch_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(accelerate launch flags, job flags) out of one command line."""
    flags = launch_flags()
    launch, job, i = [], [], 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in flags:
            n = 0 if "=" in argv[i] else flags[flag]
            launch += argv[i : i + 1 + n]
            i += 1 + n
        else:
            job.append(argv[i])
            i += 1
    return launch, job


def flag_values(job_args: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """The values of the named flags in a job's command line, or else in its --config YAML (a bare flag is "true")."""
    import yaml

    from .training import resolve_config

    given, i = {}, 0
    while i < len(job_args):
        flag, eq, value = job_args[i].partition("=")
        has_value = not eq and i + 1 < len(job_args) and not job_args[i + 1].startswith("--")
        given[flag[2:]] = value if eq else job_args[i + 1] if has_value else "true"
        i += 1 if eq or not has_value else 2
    values = {}
    if "config" in given:
        with open(resolve_config(given["config"]), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        values = {name: str(config[name]) for name in names if isinstance(config, dict) and name in config}
    return values | {name: given[name] for name in names if name in given}


def output_dir_refusal(job_args: Sequence[str]) -> str | None:
    """A training job's --output_dir refusal (it holds a model or checkpoints, or a running job holds its lock),
    found here so that it comes in seconds, before the launcher and the job start. The job checks again."""
    from .safeguards import output_dir_refusal

    values = flag_values(job_args, ("output_dir", "overwrite_output_dir", "resume_from_checkpoint"))
    if "output_dir" not in values:
        return None
    yes = ("true", "1", "yes", "last", "latest")
    resume = values.get("resume_from_checkpoint", "").lower() not in ("", "none", "false", "0", "no")
    overwrite = values.get("overwrite_output_dir", "").lower() in yes
    return output_dir_refusal(values["output_dir"], overwrite=overwrite, resume=resume)


def accelerate_config_file(name: str) -> str:
    """A path for `--accelerate_config`: an existing file, or a config shipped in recipes/accelerate/."""
    if os.path.isfile(name):
        return name
    bundled = resources.files("hf_simplegpt").joinpath("recipes", "accelerate")
    available = sorted(p.name.removesuffix(".yaml") for p in bundled.iterdir() if p.name.endswith(".yaml"))
    if name.removesuffix(".yaml") not in available:
        raise SystemExit(f"--accelerate_config {name}: no such file, and not one of the bundled configs {available}.")
    return str(bundled.joinpath(name.removesuffix(".yaml") + ".yaml"))


def launch(job: Job, launch_args: list[str], job_args: list[str]) -> int:
    """Run the job's module under `accelerate launch`; returns its exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed import DistNetworkError

    from .safeguards import LAUNCHER_PID_ENV

    if "--accelerate_config" in launch_args:
        at = launch_args.index("--accelerate_config")
        launch_args[at : at + 2] = ["--config_file", accelerate_config_file(launch_args[at + 1])]
    launch_args = [a.replace("--accelerate_config=", "--config_file=") for a in launch_args]
    parsed = launch_command_parser().parse_args([*launch_args, "--module", job.module, *job_args])
    # For the launched processes only: they check their parent is this process and ask to be stopped when it dies
    # (safeguards.die_with_parent).
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    outcome: dict = {}

    def run():
        try:
            launch_command(parsed)
            outcome["code"] = 0
        except subprocess.CalledProcessError as error:  # the job printed its own error; no launcher traceback on top
            outcome["code"] = error.returncode or 1
        except SystemExit as done:  # torchrun's way of reporting a stopped or failed job
            outcome["code"] = done.code
        except DistNetworkError as error:  # a machine of a multi-machine launch that cannot reach the main one
            address = f"{parsed.main_process_ip}:{parsed.main_process_port}"
            outcome["error"] = SystemExit(
                f"Machine {parsed.machine_rank} could not reach the main machine at {address} ({error}). Start "
                "--machine_rank 0 there, check --main_process_ip/--main_process_port and the firewall; "
                "--rdzv_conf timeout=SECONDS sets how long to wait."
            )
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            outcome["error"] = error

    # The launcher runs in a thread so that the stop signals come here rather than to accelerate (or torchrun), which
    # would kill the job 5 s (30 s) after forwarding them, whether or not its checkpoint is written.
    launcher = threading.Thread(target=run, name="accelerate-launch", daemon=True)
    try:
        with forward_stop_signals():
            launcher.start()
            launcher.join()
    finally:
        del os.environ[LAUNCHER_PID_ENV]
    if "error" in outcome:
        raise outcome["error"]
    return outcome["code"]


@contextlib.contextmanager
def forward_stop_signals():
    """While a launched job runs, pass this process's SIGINT/SIGTERM on to it (its processes are our children), then
    wait for it, however long its checkpoint takes (safeguards.SafeguardCallback saves one, then exits).

    The first signal goes on as one SIGTERM: a stop request the job answers with a checkpoint (a Ctrl-C also reaches
    the job itself, which takes the two as one request). A later SIGINT goes on as SIGINT (a second Ctrl-C: the job
    exits at once); a later SIGTERM is the same request again. Before the job has started, a signal stops this command.
    """
    import psutil

    received: list[int] = []

    def forward(signum, frame):
        jobs = psutil.Process().children()
        if not jobs:
            raise SystemExit(128 + signum)
        first = not received
        received.append(signum)
        if first or signum == signal.SIGINT:
            for process in jobs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGTERM if first else signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def help_cache_file(name: str) -> Path:
    """Where the text of `hf-simplegpt <name> --help` is kept: a file named after everything the text can depend on
    (this package's files, the installed distributions, the terminal's width), so that any change to them makes a
    new one. In $XDG_CACHE_HOME (default ~/.cache)/hf_simplegpt/help/."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".yaml", ".md"):
            digest.update(f"{path.relative_to(package)}\0".encode() + path.read_bytes())
    for entry in sys.path:  # every installed distribution's name and version, by its metadata folder
        with contextlib.suppress(OSError):
            digest.update(" ".join(sorted(n for n in os.listdir(entry or ".") if n.endswith("-info"))).encode())
    digest.update(repr(shutil.get_terminal_size().columns).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_simplegpt" / "help"
    return cache / f"{name}-{digest.hexdigest()[:20]}.txt"


def render_job_help(name: str, job: Job) -> str:
    """The job's own `--help` text, from its parser. That imports the job and its engines (torch, the Trainer, TRL:
    seconds, and torchao's and torch's load-time warnings on stderr, which are not the help): they are shown only if
    the job fails to print its help."""
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [f"hf-simplegpt {name}", "--help"]  # so that the usage line shows the job's name
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(job.module).main(["--help"])
    except SystemExit as done:
        if done.code not in (0, None):
            sys.stderr.write(err.getvalue())
            raise
    except BaseException:
        sys.stderr.write(err.getvalue())
        raise
    finally:
        sys.argv = argv
    if not out.getvalue().startswith("usage:"):
        sys.stderr.write(err.getvalue())
        raise RuntimeError(f"hf-simplegpt {name} --help printed no usage: {out.getvalue()[:200]!r}")
    return out.getvalue()


def job_help(name: str) -> str:
    """`hf-simplegpt <name> --help`: from the parsers stored in the package (`job_parsers`) when they were recorded
    with the installed libraries; else from the cache (`help_cache_file`) when there, else rendered and cached. The
    cache is only a copy, so a folder that cannot be written costs time, nothing else."""
    from .job_parsers import stored_help

    text = stored_help(name)
    if text is not None:
        return text
    path = help_cache_file(name)
    with contextlib.suppress(OSError):
        return path.read_text(encoding="utf-8")
    text = render_job_help(name, JOBS[name])
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # whole or absent, also with two at once
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-simplegpt",
        description=__doc__.split("\n\n")[0],
        epilog="`hf-simplegpt <job> --help` lists a job's flags. Training jobs pass every `accelerate launch` flag "
        "(--num_processes, --multi_gpu, --config_file, ...) to the launcher, and --accelerate_config NAME for a bundled "
        "config (multi_gpu, fsdp, ...).",
    )
    sub = parser.add_subparsers(dest="job", metavar="<job>", title="jobs")
    for name, job in JOBS.items():
        sub.add_parser(name, help=job.help, add_help=False)
    return parser


def version_mismatches() -> list[str]:
    """The installed libraries outside the ranges this package declares. pip installs a later `pip install -U
    transformers` anyway (with a warning), and a job would then fail deep inside a library whose internals moved."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        requirements = [Requirement(line) for line in metadata.requires("hf-simplegpt") or []]
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return []
    mismatches = []
    for requirement in requirements:
        if requirement.marker is not None:  # an extra's requirement, or one for other platforms
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            found = f"{requirement.name} {installed} is installed" if installed else f"{requirement.name} is missing"
            mismatches.append(f"{found}; hf-simplegpt needs {requirement}: pip install '{requirement}'")
    return mismatches


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in JOBS:
        parser.error(f"unknown job {argv[0]!r}; choose one of: {', '.join(JOBS)}")
    job, rest = JOBS[argv[0]], argv[1:]
    if rest in (["-h"], ["--help"]):  # the job's help, without loading the job's engines when it is cached
        print(job_help(argv[0]), end="")
        return 0
    mismatches = version_mismatches()
    if mismatches:
        print(f"hf-simplegpt {argv[0]}: error: " + "\n".join(mismatches), file=sys.stderr)
        return 2
    launch_args, job_args = split_launch_args(rest)
    if job.launched and "--ray_workers" in job_args:  # Ray Train's workers instead of accelerate's processes
        at = job_args.index("--ray_workers")
        if launch_args or at + 1 == len(job_args):
            parser.error(f"--ray_workers N replaces the launcher flags {launch_args}: pass one or the other.")
        workers = int(job_args[at + 1])
        from .ray_train import launch as ray_launch

        result = ray_launch(job.module, job_args[:at] + job_args[at + 2 :], workers)
        return 1 if result.error else 0
    if job.launched and "-h" not in job_args and "--help" not in job_args:
        try:
            refusal = output_dir_refusal(job_args)
        except (OSError, ValueError, TypeError):  # e.g. a --config that cannot be read: the job says why
            refusal = None
        if refusal:
            print(f"hf-simplegpt {argv[0]}: error: {refusal}", file=sys.stderr)
            return 2
        return launch(job, launch_args, job_args)
    if launch_args:
        parser.error(f"{argv[0]} runs in one process; drop the launcher flags {launch_args}.")
    sys.argv = [f"hf-simplegpt {argv[0]}", *job_args]  # so that --help shows the job's name
    importlib.import_module(job.module).main(job_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
