"""recipes/make_sft_toy_data.py: a seeded arithmetic chat dataset whose answers are right."""

import json
from pathlib import Path

from hf_simplegpt.recipes.make_sft_toy_data import main


def test_rows_are_seeded_chats_with_correct_answers(tmp_path):
    written = main(["--output", str(tmp_path / "a.jsonl"), "--rows", "50"])
    text = Path(written["output"]).read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    assert written["rows"] == len(rows) == 50
    assert text == Path(main(["--output", str(tmp_path / "b.jsonl"), "--rows", "50"])["output"]).read_text()
    for row in rows:
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        expression, result = assistant["content"].rstrip(".").split(" = ")
        assert eval(expression) == int(result)  # noqa: S307  (digits and one operator, written by the recipe)
