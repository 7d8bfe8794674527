"""How fast `hf-simplegpt --help` and `hf-simplegpt <job> --help` answer, and whether they print anything on stderr.

    python benchmarks/cli_help.py [--repeats 5] [--publish]     # results/cli-help.{json,md}

Each command runs as a fresh process (`python -m hf_simplegpt ...`, the console script's code), wall clock, median of
--repeats, with an empty help cache in a temporary $XDG_CACHE_HOME (the user's own is neither used nor touched):
- "stored parsers": every job's help as a user's first call gets it, rebuilt from `hf_simplegpt/job_parsers.json`;
- "rendered": what a job's help costs where those were recorded with other library versions (the job's parser is
  built: that imports the job and its engines), timed for `pretrain`;
- "cached": the call after that one, from the cache.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402

# `hf-simplegpt ARGS` as where the stored parsers were recorded with other library versions.
WITHOUT_STORED = (
    "import sys; from hf_simplegpt import cli, job_parsers; job_parsers.STORED = job_parsers.STORED.with_name('none'); "
    "sys.exit(cli.main(sys.argv[1:]))"
)


def timed(args: list[str], env: dict, stored: bool = True) -> tuple[float, str]:
    """(seconds, stderr) of `python -m hf_simplegpt ARGS`; fails loudly if it does not exit 0."""
    python = [sys.executable, "-m", "hf_simplegpt"] if stored else [sys.executable, "-c", WITHOUT_STORED]
    start = time.perf_counter()
    done = subprocess.run([*python, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not done.stdout.startswith("usage:"):
        raise SystemExit(f"hf-simplegpt {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stderr


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (median)")
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args(argv)
    from hf_simplegpt.cli import JOBS

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "COLUMNS": "100"}

        def measure(name: str, command: list[str], repeats: int, stored: bool = True) -> None:
            runs = []
            for _ in range(repeats):
                for path in Path(cache).rglob("*.txt"):
                    path.unlink()
                if name == "cached":
                    timed(command, env, stored=False)  # renders and caches it
                runs.append(timed(command, env, stored))
            seconds = [s for s, _ in runs]
            noise = sorted({err for _, err in runs if err})
            rows.append(
                {
                    "command": "hf-simplegpt " + " ".join(command),
                    "case": name,
                    "median_seconds": round(statistics.median(seconds), 3),
                    "max_seconds": round(max(seconds), 3),
                    "stderr_bytes": sum(len(err) for err in noise),
                }
            )
            print(rows[-1], flush=True)

        measure("top-level help", ["--help"], args.repeats)
        for job in JOBS:
            measure("stored parsers", [job, "--help"], args.repeats)
        few = max(1, args.repeats // 2)
        measure("rendered", ["pretrain", "--help"], few, stored=False)
        measure("cached", ["pretrain", "--help"], few, stored=False)
    result = {"repeats": args.repeats, "rows": rows, "environment": environment()}
    lines = ["| command | case | median s | max s | stderr bytes |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| `{r['command']}` | {r['case']} | {r['median_seconds']:.2f} | {r['max_seconds']:.2f} | {r['stderr_bytes']} |"
        for r in rows
    ]
    stored = [r["median_seconds"] for r in rows if r["case"] == "stored parsers"]
    markdown = "\n\n".join(
        [
            "# hf-simplegpt --help: time to answer",
            f"Fresh process per run, empty help cache, wall clock, median of {args.repeats} "
            f"({max(1, args.repeats // 2)} for `rendered` and `cached`); a job's help from the stored parsers: median "
            f"{statistics.median(stored):.2f} s, slowest job {max(stored):.2f} s. " + describe(result["environment"]),
            "\n".join(lines),
        ]
    )
    save("cli-help", result, markdown, args.publish)
    return result


if __name__ == "__main__":
    main()
