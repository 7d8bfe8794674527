"""hf_simplegpt.synthetic: the keyword task has the property alignment is measured by."""

from hf_simplegpt.rewards import keyword_reward
from hf_simplegpt.synthetic import KeywordTask


def test_keyword_task_has_the_measurable_property():
    task = KeywordTask(seed=1)
    pairs = task.preference_pairs(200)
    assert all(keyword_reward([p["chosen"]]) == [1.0] for p in pairs)
    assert all(keyword_reward([p["rejected"]]) == [0.0] for p in pairs)
    rate = sum(keyword_reward([r["completion"] for r in task.sft_examples(1000)])) / 1000
    assert 0.15 < rate < 0.25  # one colour in five
    plain = KeywordTask(conversational=False, seed=1).preference_pairs(3)
    assert all(isinstance(p["prompt"], str) and p["chosen"].startswith(" ") for p in plain)
    assert keyword_reward(["the cat is blue .", "the cat is blueish ."]) == [1.0, 0.0]
