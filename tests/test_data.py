"""hf_simplegpt.data: the data flags and loader every recipe shares: local formats, folders and globs, Hub datasets
and folders laid out like them, held-out rows; errors. (The pretraining corpus pipeline is tests/test_corpus.py.)"""

import json

import pandas as pd
import pytest
from datasets import Dataset

from hf_simplegpt import data
from hf_simplegpt.corpus import load_raw_datasets
from hf_simplegpt.data import DataArguments, resolve_data_files
from tests.test_corpus import DOCS, _args

# -------------------------------------------------------------------------------------------------------- loading


@pytest.fixture
def corpus_files(tmp_path):
    """The same 40 documents as .txt (blank-line separated), .jsonl, .csv and .parquet."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "c.txt").write_text("\n\n".join(DOCS) + "\n")
    (folder / "c.jsonl").write_text("".join(json.dumps({"content": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    pd.DataFrame({"content": DOCS}).to_csv(folder / "c.csv", index=False)
    pd.DataFrame({"content": DOCS}).to_parquet(folder / "c.parquet")
    return folder


@pytest.mark.parametrize(
    "name, column", [("c.txt", "text"), ("c.jsonl", "content"), ("c.csv", "content"), ("c.parquet", "content")]
)
def test_every_local_format_loads_the_same_documents(corpus_files, tmp_path, name, column):
    raw, source = load_raw_datasets(_args(tmp_path, train_file=str(corpus_files / name), text_column=column))
    assert raw["train"].column_names == ["text"]
    assert [t.strip() for t in raw["train"]["text"]] == DOCS  # cleaning strips the last paragraph's newline
    assert raw["validation"] is None and name in source


def test_folder_and_glob_collect_files_of_one_format(tmp_path):
    folder = tmp_path / "shards"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first document here\n\nsecond document here\n")
    (folder / "sub" / "b.txt").write_text("third document here\n")
    builder, files = resolve_data_files(str(folder), "--train_file")
    assert builder == "text" and [f.rsplit("/", 1)[1] for f in files] == ["a.txt", "b.txt"]
    raw, _ = load_raw_datasets(_args(tmp_path, train_file=str(folder / "**" / "*.txt"), min_chars=1))
    assert sorted(t.strip() for t in raw["train"]["text"]) == [
        "first document here",
        "second document here",
        "third document here",
    ]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"--train_file .*nope\.txt.*no such file.*Pass an existing"):
        load_raw_datasets(_args(tmp_path, train_file=str(tmp_path / "nope.txt")))
    with pytest.raises(ValueError, match="--eval_file"):
        (tmp_path / "t.txt").write_text("some text\n")
        load_raw_datasets(_args(tmp_path, train_file=str(tmp_path / "t.txt"), eval_file=str(tmp_path / "v*.txt")))


def test_mixed_formats_and_unknown_extensions_are_rejected(corpus_files):
    with pytest.raises(ValueError, match="mixes formats"):
        resolve_data_files(str(corpus_files / "c.*"), "--train_file")


def test_missing_text_column_lists_the_columns(corpus_files, tmp_path):
    with pytest.raises(ValueError, match=r"no column 'body'.*\['content', 'id'\].*--text_column"):
        load_raw_datasets(_args(tmp_path, train_file=str(corpus_files / "c.jsonl"), text_column="body"))


def test_missing_hub_dataset_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network in tests
    monkeypatch.setattr(data.datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Could not load --dataset_name 'no-such-user/no-such-dataset'"):
        load_raw_datasets(_args(tmp_path, dataset_name="no-such-user/no-such-dataset"))


def test_conflicting_or_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="either --dataset_name or --train_file"):
        DataArguments(dataset_name="x", train_file="y.txt")
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=f"--heldout_size {bad} must be a number of rows"):
            DataArguments(heldout_size=bad)


def test_every_recipe_loads_files_and_dataset_folders_the_same_way(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Dataset.from_list(rows[:3]).to_parquet(tmp_path / "held.parquet")
    train, heldout = data.load_data(DataArguments(train_file=str(tmp_path / "data" / "train.jsonl"), heldout_size=2), 0)
    assert (len(train), len(heldout)) == (8, 2) and sorted(list(train["prompt"]) + list(heldout["prompt"])) == sorted(
        r["prompt"] for r in rows
    )
    again = data.load_data(DataArguments(train_file=str(tmp_path / "data" / "train.jsonl"), heldout_size=0.2), 0)[1]
    assert list(again["prompt"]) == list(heldout["prompt"])  # a count or a fraction, the same seeded split
    train, heldout = data.load_data(
        DataArguments(train_file=str(tmp_path / "data"), eval_file=str(tmp_path / "held.parquet")), 0
    )
    assert len(train) == 10 and list(heldout["completion"]) == ["c0", "c1", "c2"]
    # --dataset_name takes a Hub id or, as here, a folder laid out like a Hub dataset repository
    train, heldout = data.load_data(DataArguments(dataset_name=str(tmp_path / "data"), heldout_size=3), 0)
    assert (len(train), len(heldout)) == (7, 3)
    with pytest.raises(ValueError, match="No data: pass --train_file"):
        data.load_data(DataArguments(), 0)
    with pytest.raises(ValueError, match="would hold out 10 of 10 rows"):
        data.load_data(DataArguments(train_file=str(tmp_path / "data"), heldout_size=10), 0)


def test_a_missing_local_dataset_folder_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    monkeypatch.setattr(data.datasets, "load_dataset", lambda *a, **k: pytest.fail("the Hub was asked"))
    for name in ("./nope", "outputs/nope", str(tmp_path / "nope")):
        with pytest.raises(ValueError, match="no such folder"):
            data.load_data(DataArguments(dataset_name=name), 0)
