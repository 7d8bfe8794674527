"""Alignment: the shared helpers (hf_simplegpt.alignment) and the reward / RL / DPO / distillation recipes.

Everything runs on the synthetic keyword task with a 2-layer, 32-wide SimpleGPT warmed up by a few seconds of
supervised training, so the trainers have something real to align. Assertions compare measured values (accuracy,
rewards, margins, divergences) before and after training.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt import alignment
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer
from tests.conftest import tiny_config_kwargs

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "recipes" / "configs"
QUIET = ["--disable_tqdm", "true", "--report_to", "none"]


def run_recipe(name: str, *args: str):
    """Run recipes/<name>.py's main() in-process (a subprocess would pay the torch/TRL import again)."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO_ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([*args, *QUIET])


def metrics_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "alignment_metrics.json").read_text())


def make_model(tokenizer, **shape) -> SimpleGPTForCausalLM:
    torch.manual_seed(0)
    kwargs = tiny_config_kwargs(vocab_size=len(tokenizer), **special_token_ids(tokenizer), **shape)
    return SimpleGPTForCausalLM(SimpleGPTConfig(**kwargs))


def warm_start(model, tokenizer, rows, steps: int = 150, lr: float = 5e-3):
    """A few seconds of plain causal-LM training on prompt + completion (the role of SFT in the real pipeline)."""
    ids = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]
           for r in rows]  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = tokenizer.pad({"input_ids": ids[step * 16 : (step + 1) * 16]}, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """Task data files, a warmed-up policy (also the distillation teacher) and a smaller, less trained student."""
    root = tmp_path_factory.mktemp("alignment")
    task = alignment.KeywordTask(seed=0)
    tokenizer = train_tokenizer(task.texts(500), vocab_size=420, model_max_length=64)
    policy = warm_start(make_model(tokenizer), tokenizer, task.sft_examples(2400))
    paths = {name: root / name for name in ("policy", "student")}
    policy.save_pretrained(paths["policy"])
    tokenizer.save_pretrained(paths["policy"])
    student = make_model(tokenizer, hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    warm_start(student, tokenizer, task.sft_examples(640), steps=40).save_pretrained(paths["student"])
    tokenizer.save_pretrained(paths["student"])
    paths["pairs"] = Path(alignment.write_jsonl(task.preference_pairs(400), root / "pairs.jsonl"))
    paths["prompts"] = Path(alignment.write_jsonl(task.prompts(400), root / "prompts.jsonl"))
    paths["root"] = root
    return paths


@pytest.fixture(scope="session")
def reward_dir(workspace) -> Path:
    out = workspace["root"] / "reward"
    run_recipe("reward", "--config", str(CONFIGS / "reward_tiny.yaml"), "--model_name_or_path", str(workspace["policy"]),
               "--train_file", str(workspace["pairs"]), "--output_dir", str(out))  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------ task and helpers


def test_keyword_task_has_the_measurable_property():
    task = alignment.KeywordTask(seed=1)
    pairs = task.preference_pairs(200)
    assert all(alignment.keyword_reward([p["chosen"]]) == [1.0] for p in pairs)
    assert all(alignment.keyword_reward([p["rejected"]]) == [0.0] for p in pairs)
    rate = sum(alignment.keyword_reward([r["completion"] for r in task.sft_examples(1000)])) / 1000
    assert 0.15 < rate < 0.25  # one colour in five
    plain = alignment.KeywordTask(conversational=False, seed=1).preference_pairs(3)
    assert all(isinstance(p["prompt"], str) and p["chosen"].startswith(" ") for p in plain)
    assert alignment.keyword_reward(["the cat is blue .", "the cat is blueish ."]) == [1.0, 0.0]


def test_load_reward_function_resolves_dotted_paths_and_binds_kwargs():
    func = alignment.load_reward_function("hf_simplegpt.alignment.keyword_reward", {"keyword": "red"})
    assert func(completions=["a red fox", "a blue fox"]) == [1.0, 0.0]
    assert alignment.reward_name(func) == "keyword_reward"
    assert alignment.load_reward_function("hf_simplegpt.alignment:keyword_reward") is alignment.keyword_reward
    with pytest.raises(ValueError, match="Cannot import reward function"):
        alignment.load_reward_function("hf_simplegpt.alignment.no_such_reward")
    with pytest.raises(ValueError, match="dotted path"):
        alignment.load_reward_function("keyword_reward")


def test_preference_data_validation_names_the_fields_found():
    assert alignment.validate_preference_dataset(Dataset.from_list(alignment.KeywordTask().preference_pairs(2))) == (
        "conversational"
    )
    bad = Dataset.from_list([{"prompt": "Q", "good": "a", "bad": "b"}])
    with pytest.raises(ValueError, match=r"\['chosen', 'rejected'\].*\['prompt', 'good', 'bad'\]"):
        alignment.validate_preference_dataset(bad)
    mixed = Dataset.from_list([{"prompt": "Q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}])
    with pytest.raises(ValueError, match="mixes or misshapes"):
        alignment.validate_preference_dataset(mixed)
    with pytest.raises(ValueError, match="lacks the field 'prompt'.*'text'"):
        alignment.validate_prompt_dataset(Dataset.from_list([{"text": "hello"}]))


@pytest.mark.parametrize("conversational", [False, True])
def test_scorer_encodes_exactly_as_reward_trainer_trained(workspace, conversational):
    """The reward model must be scored on the token sequences it was trained on (plain text: with the EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    model = AutoModelForSequenceClassification.from_pretrained(workspace["policy"], num_labels=1)
    rows = alignment.KeywordTask(conversational=conversational, seed=3).preference_pairs(4)
    args = RewardConfig(output_dir=str(workspace["root"] / "unused"), use_cpu=True, bf16=False,
                        activation_checkpointing=False, report_to="none")
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    scorer = alignment.RewardModelScorer(model, tokenizer)
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        assert scorer.encode(row["prompt"], row["chosen"]) == prepared["chosen_ids"]
        assert scorer.encode(row["prompt"], row["rejected"]) == prepared["rejected_ids"]
    if not conversational:
        assert prepared["chosen_ids"][-1] == tokenizer.eos_token_id


def test_distinct_pad_token_is_added_when_missing_or_equal_to_eos(workspace):
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    model = AutoModelForSequenceClassification.from_pretrained(workspace["policy"], num_labels=1)
    assert not alignment.add_distinct_pad_token(model, tokenizer)  # the project's tokenizer has one
    tokenizer.pad_token = tokenizer.eos_token
    assert alignment.add_distinct_pad_token(model, tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        alignment.RewardModelScorer(model, tokenizer)


# ------------------------------------------------------------------------------------------------ reward model


def test_reward_model_learns_the_preference(reward_dir):
    metrics = metrics_of(reward_dir)
    assert metrics["preference_accuracy_after"] >= 0.9
    assert metrics["preference_accuracy_after"] > metrics["preference_accuracy_before"] + 0.2
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir)
    assert type(model).__name__ == "SimpleGPTForSequenceClassification" and model.config.num_labels == 1
    assert (reward_dir / "README.md").read_text().count("preference_accuracy_after") == 1


def test_reward_recipe_adds_a_pad_token_when_the_tokenizer_has_none(workspace, tmp_path):
    base = tmp_path / "no_pad"
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    tokenizer.pad_token = None
    tokenizer.save_pretrained(base)
    AutoModelForCausalLM.from_pretrained(workspace["policy"]).save_pretrained(base)
    out = tmp_path / "reward"
    run_recipe("reward", "--config", str(CONFIGS / "reward_tiny.yaml"), "--model_name_or_path", str(base),
               "--train_file", str(workspace["pairs"]), "--output_dir", str(out), "--max_steps", "2")  # fmt: skip
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.pad_token is not None and saved.pad_token_id != saved.eos_token_id
    assert AutoModelForSequenceClassification.from_pretrained(out).config.pad_token_id == saved.pad_token_id


def test_reward_recipe_with_lora_saves_a_merged_reward_model(workspace, tmp_path):
    out = tmp_path / "reward_lora"
    run_recipe("reward", "--config", str(CONFIGS / "reward_tiny.yaml"), "--model_name_or_path", str(workspace["policy"]),
               "--train_file", str(workspace["pairs"]), "--output_dir", str(out), "--use_peft", "--lora_r", "8",
               "--max_steps", "30", "--learning_rate", "5e-3")  # fmt: skip
    metrics = metrics_of(out)
    assert metrics["preference_accuracy_after"] > metrics["preference_accuracy_before"] + 0.2
    assert not (out / "adapter_config.json").exists()  # merged: loads without PEFT
    AutoModelForSequenceClassification.from_pretrained(out)


def test_reward_recipe_rejects_pairs_without_chosen_and_rejected(workspace, tmp_path):
    bad = alignment.write_jsonl([{"prompt": "Q", "answer": "a"}] * 80, tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['chosen', 'rejected'\]; it has \['prompt', 'answer'\]"):
        run_recipe("reward", "--config", str(CONFIGS / "reward_tiny.yaml"), "--model_name_or_path",
                   str(workspace["policy"]), "--train_file", bad, "--output_dir", str(tmp_path / "out"))  # fmt: skip


def test_reward_model_folder_must_be_a_sequence_classifier(workspace):
    with pytest.raises(ValueError, match="not a sequence-classification reward model"):
        alignment.load_reward_model(str(workspace["policy"]))


# ------------------------------------------------------------------------------------------------ GRPO / RLOO


def rl_args(workspace, output_dir, *extra):
    return ["--config", str(CONFIGS / "rl_tiny.yaml"), "--model_name_or_path", str(workspace["policy"]),
            "--train_file", str(workspace["prompts"]), "--output_dir", str(output_dir), *extra]  # fmt: skip


def test_grpo_against_the_reward_model_raises_reward_and_keyword_rate(workspace, reward_dir, tmp_path):
    out = tmp_path / "grpo"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--reward_model_name_or_path", str(reward_dir),
                                        "--reward_funcs", "hf_simplegpt.alignment.keyword_reward",
                                        "--reward_weights", "1.0", "0.0", "--max_steps", "30",
                                        "--learning_rate", "3e-3"))  # fmt: skip
    metrics = metrics_of(out)
    assert metrics["heldout_reward_model_after"] > metrics["heldout_reward_model_before"] + 1.0
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"] + 0.3
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert logged[-1]["reward"] > logged[0]["reward"]
    assert all("kl" in h and "completions/mean_length" in h for h in logged)
    assert (out / "reward_curve.png").stat().st_size > 10_000


def test_rloo_with_lora_runs_from_a_reward_function(workspace, tmp_path):
    out = tmp_path / "rloo"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--algorithm", "rloo", "--use_peft", "--lora_r", "8",
                                        "--reward_funcs", "hf_simplegpt.alignment.keyword_reward", "--max_steps", "6",
                                        "--learning_rate", "5e-3", "--heldout_size", "16"))  # fmt: skip
    assert type(trainer).__name__ == "RLOOTrainer"
    assert (out / "adapter_config.json").exists()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 0  # the adapter moved off its zero init
    metrics = metrics_of(out)
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]


def test_grpo_with_lora_trains_the_adapter(workspace, tmp_path):
    out = tmp_path / "grpo_lora"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--use_peft", "--lora_r", "8",
                                        "--reward_funcs", "hf_simplegpt.alignment.keyword_reward", "--max_steps", "4",
                                        "--learning_rate", "5e-3", "--heldout_size", "16"))  # fmt: skip
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 0
    metrics = metrics_of(out)
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]


def test_rl_recipe_rejects_a_causal_lm_as_reward_model_and_a_missing_reward(workspace, tmp_path):
    with pytest.raises(ValueError, match="not a sequence-classification reward model"):
        run_recipe("rl", *rl_args(workspace, tmp_path / "a", "--reward_model_name_or_path", str(workspace["policy"])))
    with pytest.raises(ValueError, match="No reward"):
        run_recipe("rl", *rl_args(workspace, tmp_path / "b"))


def test_algorithm_is_read_from_the_command_line_or_the_yaml(tmp_path):
    spec = importlib.util.spec_from_file_location("rl_recipe", REPO_ROOT / "recipes" / "rl.py")
    rl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rl)
    config = tmp_path / "c.yaml"
    config.write_text("algorithm: rloo\n")
    assert rl.selected_algorithm(["--config", str(config)]) == "rloo"
    assert rl.selected_algorithm(["--config", str(config), "--algorithm", "grpo"]) == "grpo"
    assert rl.selected_algorithm(["--algorithm=rloo"]) == "rloo"
    assert rl.selected_algorithm([]) == "grpo"
    with pytest.raises(ValueError, match="unknown"):
        rl.main(["--algorithm", "ppo"])


# ------------------------------------------------------------------------------------------------ DPO


@pytest.mark.parametrize("lora", [False, True], ids=["frozen-copy-reference", "adapter-disabled-reference"])
def test_dpo_raises_the_chosen_over_rejected_margin(workspace, tmp_path, lora):
    out = tmp_path / "dpo"
    extra = ["--use_peft", "--lora_r", "8", "--learning_rate", "1e-2"] if lora else []
    run_recipe("dpo", "--config", str(CONFIGS / "dpo_tiny.yaml"), "--model_name_or_path", str(workspace["policy"]),
               "--train_file", str(workspace["pairs"]), "--output_dir", str(out), "--max_steps", "20", *extra)  # fmt: skip
    metrics = metrics_of(out)
    assert metrics["logp_margin_after"] > metrics["logp_margin_before"] + 1.0
    assert metrics["reference_model"] == ("the base model with the LoRA adapter disabled" if lora else
                                          "a frozen copy of the model")  # fmt: skip
    assert (out / "adapter_config.json").exists() == lora


# ------------------------------------------------------------------------------------------------ distillation


def distill_args(workspace, output_dir, *extra):
    return ["--config", str(CONFIGS / "distill_tiny.yaml"), "--model_name_or_path", str(workspace["student"]),
            "--teacher_model_name_or_path", str(workspace["policy"]), "--train_file", str(workspace["prompts"]),
            "--output_dir", str(output_dir), "--max_steps", "20", *extra]  # fmt: skip


def test_distillation_lowers_the_students_divergence_from_the_teacher(workspace, tmp_path):
    out = tmp_path / "distill"
    run_recipe("distill", *distill_args(workspace, out, "--learning_rate", "1e-2"))
    metrics = metrics_of(out)
    assert metrics["kl_teacher_student_after"] < 0.8 * metrics["kl_teacher_student_before"]
    assert metrics["student_parameters"] < metrics["teacher_parameters"]


def test_distillation_with_lora_trains_the_adapter(workspace, tmp_path):
    # LoRA cannot touch the embeddings and the LM head, where most of a 16-wide student's capacity to reshape its
    # next-token distribution lives, so on this toy the divergence barely moves: check the adapter trains and does
    # no harm.
    out = tmp_path / "distill_lora"
    trainer = run_recipe("distill", *distill_args(workspace, out, "--use_peft", "--lora_r", "8", "--max_steps", "6"))
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 0
    metrics = metrics_of(out)
    assert metrics["kl_teacher_student_after"] < 1.05 * metrics["kl_teacher_student_before"]
    assert (out / "adapter_config.json").exists()


def test_distillation_rejects_a_teacher_with_another_vocabulary(workspace, tmp_path):
    other = train_tokenizer(alignment.KeywordTask(seed=5).texts(300), vocab_size=300, model_max_length=64)
    teacher = tmp_path / "teacher"
    make_model(other).save_pretrained(teacher)
    other.save_pretrained(teacher)
    with pytest.raises(ValueError, match=r"has vocab_size \d+ but the teacher .* has 300\. .*same tokenizer"):
        run_recipe("distill", "--config", str(CONFIGS / "distill_tiny.yaml"), "--model_name_or_path",
                   str(workspace["student"]), "--teacher_model_name_or_path", str(teacher), "--train_file",
                   str(workspace["prompts"]), "--output_dir", str(tmp_path / "out"))  # fmt: skip


def test_alignment_recipes_refuse_an_adapter_folder_as_the_starting_model(workspace, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter, not a standalone model"):
        run_recipe("dpo", "--config", str(CONFIGS / "dpo_tiny.yaml"), "--model_name_or_path", str(adapter),
                   "--train_file", str(workspace["pairs"]), "--output_dir", str(tmp_path / "out"))  # fmt: skip
