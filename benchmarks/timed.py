"""Time any command and keep what it measured: the results file for numbers a job prints or writes itself.

    python benchmarks/timed.py --name alignment-demo --include outputs/alignment_demo/summary.json --publish -- \
        hf-simplegpt alignment-demo --output_dir outputs/alignment_demo

Runs the command once, records its wall-clock, user and system seconds, its exit code and the machine's load, and
copies in the JSON files named by `--include` (what the command wrote: metrics, summaries) as they were after it.
A command that fails writes no results.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="results file stem")
    parser.add_argument("--include", nargs="*", default=[], type=Path, help="JSON files the command writes")
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    parser.add_argument("--output-dir", type=Path, help="write here instead (overrides --publish)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to time after --")
    before = environment()
    start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    returncode = subprocess.call(command)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if returncode != 0:
        raise SystemExit(f"{command[0]} exited with {returncode}: no results written")
    result = {
        "command": "python benchmarks/timed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "timed": " ".join(command),
        "seconds": {
            "wall": round(wall, 1),
            "user": round(after.ru_utime - usage.ru_utime, 1),
            "system": round(after.ru_stime - usage.ru_stime, 1),
        },
        "environment_before": before,
        "environment_after": environment(),
        "included": {str(path): json.loads(path.read_text()) for path in args.include},
    }
    s = result["seconds"]
    markdown = (
        f"`{result['timed']}`: {s['wall']} s wall clock ({s['user']} s user, {s['system']} s system).\n\n"
        f"Before: {describe(before)}\nAfter: {describe(result['environment_after'])}\n"
    )
    for path, content in result["included"].items():
        markdown += f"\n`{path}`:\n\n```json\n{json.dumps(content, indent=2)}\n```\n"
    save(args.name, result, markdown, args.publish, args.output_dir)
    return result


if __name__ == "__main__":
    main()
