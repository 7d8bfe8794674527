"""MMLU harness: the lm-evaluation-harness prompt character by character, scoring, aggregation, bad input."""

import json

import pytest

from hf_simplegpt.evaluation.loglikelihood import count_rows, encode_pair
from hf_simplegpt.evaluation.mmlu import (
    SUBJECT_CATEGORY,
    Question,
    aggregate,
    build_context,
    evaluate_mmlu,
    load_mmlu,
    predict,
    write_samples,
)
from tests.conftest import MMLU_FIXTURE
from tests.evaluation.conftest import reference_loglik


def test_prompt_format_character_by_character(mmlu_dir):
    (subject,) = load_mmlu(mmlu_dir, ["abstract_algebra"], num_fewshot=2)
    context = build_context(subject.name, subject.dev[:2], subject.test[0])
    assert context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "What is 1 + 1 in Z_2?\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: A\n\n"
        "Which group is cyclic?\nA. Z_4\nB. S_3\nC. D_4\nD. Q_8\nAnswer: A\n\n"
        "Find the order of 2 in Z_6.\nA. 1\nB. 2\nC. 3\nD. 6\nAnswer:"
    )
    zero_shot = build_context(subject.name, (), subject.test[1])
    assert zero_shot == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Is every field a ring?\nA. Yes\nB. No\nC. Only finite ones\nD. Only infinite ones\nAnswer:"
    )


def test_local_folder_with_and_without_header(mmlu_dir):
    algebra, marketing = load_mmlu(mmlu_dir, num_fewshot=2)
    assert (algebra.name, marketing.name) == ("abstract_algebra", "marketing")
    assert [q.answer for q in algebra.test] == [2, 0, 1]  # letters C, A, B
    assert [q.answer for q in marketing.test] == [0, 1]  # header row skipped, indices kept
    assert marketing.test[0] == Question(
        "Which is a pricing strategy?", ("Skimming", "Cooking", "Sailing", "Painting"), 0
    )
    assert len(marketing.dev) == 2


def test_scores_match_reference_and_truncate_from_the_left(tiny_model, tiny_tokenizer, mmlu_dir):
    subjects = load_mmlu(mmlu_dir, num_fewshot=2)
    results, samples = evaluate_mmlu(tiny_model, tiny_tokenizer, subjects, num_fewshot=2, batch_size=3, progress=False)
    questions = [(s.name, s.dev[:2], q) for s in subjects for q in s.test]
    assert len(samples) == len(questions) == 5
    longest = max(len(tiny_tokenizer(build_context(*q))["input_ids"]) for q in questions)
    assert longest > tiny_model.config.max_position_embeddings  # the left cut is exercised
    for sample, (name, shots, q) in zip(samples, questions):
        context = build_context(name, shots, q)
        expected = [reference_loglik(tiny_model, tiny_tokenizer, context, " " + c) for c in "ABCD"]
        assert sample["choice_logliks"] == pytest.approx(expected, abs=1e-4)
        assert sample["pred"] == predict(expected)
        assert sample["answer"] == q.answer and sample["subject"] == name
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 0, 1]
    assert results["n"] == 5 and results["num_fewshot"] == 2


def test_one_pass_agrees_with_per_choice_scoring(tiny_model, answer_tokenizer, mmlu_dir):
    assert all(len(answer_tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in "ABCD")
    subjects = load_mmlu(mmlu_dir, num_fewshot=1)
    _, one_pass = evaluate_mmlu(tiny_model, answer_tokenizer, subjects, num_fewshot=1, one_pass=True, progress=False)
    res, per_choice = evaluate_mmlu(
        tiny_model, answer_tokenizer, subjects, num_fewshot=1, one_pass=False, progress=False
    )
    assert res["forward_rows"] == 4 * 5
    for a, b in zip(one_pass, per_choice):
        assert a["choice_logliks"] == pytest.approx(b["choice_logliks"], abs=1e-5)
    pairs = [encode_pair(answer_tokenizer, "Answer:", " " + c) for c in "ABCD"]
    assert count_rows(pairs, 64, share_inputs=True) == 1  # one forward pass scores all four


def test_prediction_takes_the_first_of_tied_scores():
    assert predict([-1.0, -0.5, -0.5, -2.0]) == 1
    assert predict([-3.0, -3.0, -3.0, -3.0]) == 0


def test_aggregate_per_subject_category_and_overall():
    subjects = ["abstract_algebra", "abstract_algebra", "anatomy", "philosophy", "marketing", "marketing", "custom"]
    preds = [0, 1, 2, 3, 0, 0, 1]
    refs = [0, 0, 2, 3, 1, 0, 1]
    result = aggregate(preds, refs, subjects)
    assert result["subjects"]["abstract_algebra"] == {"acc": 0.5, "n": 2}
    assert result["categories"] == {
        "stem": {"acc": 2 / 3, "n": 3},  # anatomy counts as STEM, as in lm-evaluation-harness
        "humanities": {"acc": 1.0, "n": 1},
        "other": {"acc": 0.5, "n": 2},
    }
    assert result["acc"] == pytest.approx(5 / 7)  # micro average; "custom" counts here, in no category
    assert result["acc_stderr"] == pytest.approx(((5 / 7) * (2 / 7) / 6) ** 0.5)
    assert len(SUBJECT_CATEGORY) == 57
    assert sorted(set(SUBJECT_CATEGORY.values())) == ["humanities", "other", "social_sciences", "stem"]


def test_limit_and_samples_jsonl(tiny_model, tiny_tokenizer, mmlu_dir, tmp_path):
    subjects = load_mmlu(mmlu_dir, ["marketing", "abstract_algebra"])
    results, samples = evaluate_mmlu(tiny_model, tiny_tokenizer, subjects, limit=1, progress=False)
    assert [(s["subject"], s["doc_id"]) for s in samples] == [("marketing", 0), ("abstract_algebra", 0)]
    write_samples(samples, tmp_path / "s.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert lines == samples and set(lines[0]) == {"subject", "doc_id", "choice_logliks", "pred", "answer"}


def test_folder_without_test_files_lists_what_it_found(tmp_path):
    (tmp_path / "data" / "val").mkdir(parents=True)
    (tmp_path / "data" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"No MMLU test files.*readme\.txt.*val/"):
        load_mmlu(tmp_path / "data")


def test_unknown_subject_lists_valid_ones(mmlu_dir):
    with pytest.raises(
        ValueError, match=r"Unknown MMLU subject.*'astrology'.*valid subjects: abstract_algebra, marketing"
    ):
        load_mmlu(mmlu_dir, ["astrology"])


def test_more_shots_than_dev_questions(mmlu_dir):
    with pytest.raises(ValueError, match=r"num_fewshot=3 but marketing has only 2 dev questions"):
        load_mmlu(mmlu_dir, num_fewshot=3)
    assert len(MMLU_FIXTURE["marketing"]["dev"]) == 2


def test_shots_without_dev_files(mmlu_dir):
    for path in (mmlu_dir / "dev").iterdir():
        path.unlink()
    assert len(load_mmlu(mmlu_dir, num_fewshot=0)) == 2  # 0-shot needs no dev files
    with pytest.raises(ValueError, match=r"Few-shot examples need .*abstract_algebra_dev\.csv.*dev/: \[\] \(0 files\)"):
        load_mmlu(mmlu_dir, num_fewshot=1)


def test_bad_answer_names_file_and_line(mmlu_dir):
    path = mmlu_dir / "test" / "marketing_test.csv"
    path.write_text(path.read_text() + "Q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match=r"marketing_test\.csv:4: answer 'E'"):
        load_mmlu(mmlu_dir, ["marketing"])


def test_real_mmlu_layout(real_mmlu):
    subjects = load_mmlu(real_mmlu, num_fewshot=5)
    assert len(subjects) == 57 and {s.name for s in subjects} == set(SUBJECT_CATEGORY)
    assert sum(len(s.test) for s in subjects) == 14042
    assert all(len(s.dev) == 5 for s in subjects)
    algebra = subjects[0]
    assert build_context(algebra.name, (), algebra.test[0]).startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    )


def test_mmlu_from_the_hub_offline_names_the_local_flag(tmp_path, tiny_model, tiny_tokenizer, monkeypatch):
    """The README's `evaluate --config recipes/configs/evaluate_mmlu.yaml` on a machine without the Hub: an error that
    names --mmlu_data_dir, not the datasets library's ConnectionError."""
    import datasets
    from huggingface_hub import constants

    from hf_simplegpt.recipes import eval as eval_recipe

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # nothing cached from before
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError) as error:
        eval_recipe.main(
            [
                "--config",
                "recipes/configs/evaluate_mmlu.yaml",
                "--model_name_or_path",
                str(tmp_path / "model"),
                "--output_dir",
                str(tmp_path / "eval"),
                "--subjects",
                "marketing",
            ]
        )
    assert "the Hub is unreachable" in str(error.value) and "Pass --mmlu_data_dir DIR" in str(error.value)
