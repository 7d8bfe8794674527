"""lm-evaluation-harness as a client of `hf-simplegpt serve`: its `local-completions` model with default settings
(token-id prompts; `echo` + `logprobs` + `max_tokens: 1` for loglikelihoods) against the shared server, on two small
local tasks (one generate_until, one multiple_choice), gives what its direct `hf` model gives on the same folder,
prompt by prompt."""

import pytest

pytest.importorskip("tenacity")  # lm-eval's API models need lm-eval[api]
lm_eval = pytest.importorskip("lm_eval")

QUESTIONS = ["The quick brown fox", "A journey of a thousand miles", "To be or not", "Once upon a time"]
CHOICES = [" jumps", " sleeps", " runs away"]


def task_configs() -> list[dict]:
    """Two tasks on a few in-memory rows: continuations up to a blank line (exact match), and a 3-way choice (acc)."""
    rows = [{"question": q, "answer": "x", "choices": CHOICES, "label": i % 3} for i, q in enumerate(QUESTIONS)]

    def dataset(**metadata):
        from datasets import Dataset, DatasetDict

        return DatasetDict({"test": Dataset.from_list(rows)})

    data = {"custom_dataset": dataset, "test_split": "test"}
    generate = {
        "task": "serve_generate",
        **data,
        "output_type": "generate_until",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": 16, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    }
    choose = {
        "task": "serve_choice",
        **data,
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc"}],
    }
    return [generate, choose]


def run(model, tasks: list[dict]) -> dict:
    """lm-eval's evaluation of `model` on `tasks` (without simple_evaluate's environment report, and with a task
    manager that does not index lm-eval's thousands of bundled task files: 40 s on a loaded 2-core machine)."""
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager, get_task_dict

    task_dict = get_task_dict(tasks, TaskManager(include_defaults=False))
    return evaluate(model, task_dict, log_samples=True, bootstrap_iters=0)


def responses(results, task: str) -> dict[int, list]:
    return {s["doc_id"]: [r[0] for r in s["resps"]] for s in results["samples"][task]}


def test_lm_eval_through_the_server_matches_its_direct_hf_run(server, served_dir):
    from lm_eval.api.registry import get_model

    # local-completions with its defaults: token-id prompts, the folder's tokenizer (the model name is the folder).
    served = run(
        get_model("local-completions")(model=server.model, base_url=f"{server.base_url}/completions"), task_configs()
    )
    direct = run(get_model("hf")(pretrained=str(served_dir), device="cpu"), task_configs())
    generated = responses(served, "serve_generate")
    assert generated == responses(direct, "serve_generate") and all(text for (text,) in generated.values())
    chosen, reference = responses(served, "serve_choice"), responses(direct, "serve_choice")
    assert chosen.keys() == reference.keys() == set(range(len(QUESTIONS)))
    for doc in chosen:
        # (loglikelihood of each choice, whether it is the greedy continuation)
        assert [loglik for loglik, _ in chosen[doc]] == pytest.approx([ll for ll, _ in reference[doc]], abs=1e-4)
        assert [greedy for _, greedy in chosen[doc]] == [greedy for _, greedy in reference[doc]]
    assert served["results"]["serve_choice"]["acc,none"] == direct["results"]["serve_choice"]["acc,none"]
