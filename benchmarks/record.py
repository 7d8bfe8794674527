"""Where benchmark results go, and what each results file records about where it was measured.

Every script writes `<stem>.json` (the numbers) and `<stem>.md` (the table the docs quote) to `benchmarks/out/`
(git-ignored), or with `--publish` to `benchmarks/results/`, the files `benchmarks/README.md` and `docs/` cite.
"""

import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_DIR, OUT_DIR = HERE / "results", HERE / "out"


def environment() -> dict:
    """The machine, the load on it (1/5/15-minute averages) and the library versions, for a results file."""
    import torch
    import transformers

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def describe(env: dict) -> str:
    """One line for a markdown results file."""
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    return f"{env['machine']}; load average {'/'.join(map(str, env['load_average']))}; {versions}."


def save(stem: str, result: dict, markdown: str, publish: bool = False, output_dir: Path | None = None) -> Path:
    """Write `<stem>.json` and `<stem>.md` (the command that made them first) and print the markdown."""
    folder = output_dir or (RESULTS_DIR if publish else OUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    result.setdefault("command", " ".join(["python", *sys.argv]))
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = f"`{result['command']}`\n\n{markdown.strip()}\n"
    (folder / f"{stem}.md").write_text(text)
    print(text)
    return folder
