"""benchmarks/timed.py keeps a command's times and the JSON it wrote; a failing command leaves no results."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import timed  # noqa: E402


def test_timed_records_the_command_its_times_and_what_it_wrote(tmp_path):
    written = tmp_path / "metrics.json"
    code = f"import json; json.dump({{'loss': 1.25, 'steps': 3}}, open({str(written)!r}, 'w'))"
    result = timed.main(
        [
            "--name",
            "t",
            "--include",
            str(written),
            "--output-dir",
            str(tmp_path / "out"),
            "--",
            sys.executable,
            "-c",
            code,
        ]
    )
    saved = json.loads((tmp_path / "out" / "t.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["included"] == {str(written): {"loss": 1.25, "steps": 3}}
    assert saved["timed"].endswith(code) and saved["seconds"]["wall"] >= 0
    assert len(saved["environment_before"]["load_average"]) == 3
    markdown = (tmp_path / "out" / "t.md").read_text()
    assert markdown.startswith("`python benchmarks/timed.py --name t") and '"loss": 1.25' in markdown


def test_a_failing_command_writes_no_results(tmp_path):
    with pytest.raises(SystemExit, match="exited with 3: no results written"):
        timed.main(["--name", "t", "--output-dir", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert not list(tmp_path.iterdir())
