"""How fast `hf-simplegpt --help` and `hf-simplegpt <job> --help` answer, and whether they print anything on stderr.

    python benchmarks/cli_help.py [--repeats 5] [--publish]     # results/cli-help.{json,md}

Each command runs as a fresh process (`python -m hf_simplegpt ...`, the console script's code), wall clock, median of
--repeats. A job's help is rendered from its parser once (that imports the job and its engines: "cold", timed for
`pretrain` with an empty cache) and then comes from the cache (`hf_simplegpt.cli.help_cache_file`: "cached", timed
for every job, after one process has rendered them all). The cache lives in a temporary $XDG_CACHE_HOME, so the
user's own is neither used nor touched.
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


def timed(args: list[str], env: dict) -> tuple[float, str]:
    """(seconds, stderr) of `python -m hf_simplegpt ARGS`; fails loudly if it does not exit 0."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hf_simplegpt", *args], capture_output=True, text=True, env=env)
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

        def measure(name: str, command: list[str], repeats: int, before=None) -> None:
            runs = []
            for _ in range(repeats):
                if before:
                    before()
                runs.append(timed(command, env))
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

        def empty_cache():
            for path in Path(cache).rglob("*.txt"):
                path.unlink()

        measure("top-level help", ["--help"], args.repeats)
        measure("cold (empty cache)", ["pretrain", "--help"], max(1, args.repeats // 2), before=empty_cache)
        # Render and cache every job's help in one process (they share their engines' imports), then time each.
        fill = "from hf_simplegpt import cli\nfor job in cli.JOBS: cli.job_help(job)"
        subprocess.run([sys.executable, "-c", fill], env=env, check=True, capture_output=True)
        for job in JOBS:
            measure("cached", [job, "--help"], args.repeats)
    result = {"repeats": args.repeats, "rows": rows, "environment": environment()}
    lines = ["| command | case | median s | max s | stderr bytes |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| `{r['command']}` | {r['case']} | {r['median_seconds']:.2f} | {r['max_seconds']:.2f} | {r['stderr_bytes']} |"
        for r in rows
    ]
    cached = [r["median_seconds"] for r in rows if r["case"] == "cached"]
    markdown = "\n\n".join(
        [
            "# hf-simplegpt --help: time to answer",
            f"Fresh process per run, wall clock, median of {args.repeats} ({max(1, args.repeats // 2)} for the cold "
            f"render); cached job help: median {statistics.median(cached):.2f} s, slowest job {max(cached):.2f} s. "
            + describe(result["environment"]),
            "\n".join(lines),
        ]
    )
    save("cli-help", result, markdown, args.publish)
    return result


if __name__ == "__main__":
    main()
