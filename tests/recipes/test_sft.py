"""recipes/sft.py (hf-simplegpt sft) end to end on a tiny SimpleGPT: full SFT, LoRA + merge, a GPT-2-converted base, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.conversion import convert_gpt2_to_simplegpt
from hf_simplegpt.data import DataArguments
from hf_simplegpt.hub import TOKENIZER_FILES, hub_files
from hf_simplegpt.recipes import sft
from tests.conftest import expected_lora_params, tiny_config_kwargs, write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    ("Say hi.", "Hi there."),
    ("Name a color.", "Blue."),
    ("Count to three.", "One two three."),
    ("Name a fruit.", "An apple."),
    ("Greet me.", "Hello friend."),
    ("Name a pet.", "A cat."),
    ("Say bye.", "Goodbye."),
    ("Name a day.", "Monday."),
]


@pytest.fixture(autouse=True)
def one_thread():
    """A 50k-parameter model trains several times faster on one thread than on threads contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def base_model():
    """The tiny SimpleGPT standing in for a pretrained base. With GPT-2's 0.02 init a random model's logits are
    near-uniform and LoRA on its frozen weights barely moves them; a 0.2 init gives the adapters something to steer."""
    torch.manual_seed(0)
    return SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(initializer_range=0.2))).eval()


@pytest.fixture
def base_dir(tmp_path, base_model, tiny_tokenizer):
    path = tmp_path / "base"
    base_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def run_sft(base, train_file, output_dir, *extra):
    """The recipe with the CPU config, a short schedule and the given extra flags; returns its results dict."""
    argv = [
        "--config",
        str(REPO_ROOT / "recipes" / "configs" / "sft_tiny.yaml"),
        "--model_name_or_path",
        str(base),
        "--train_file",
        str(train_file),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "24",
        "--logging_steps",
        "8",
        *extra,
    ]
    return sft.main(argv)


def test_full_sft_lowers_the_heldout_loss(tmp_path, base_dir, capsys):
    rows = [{"instruction": q, "response": a} for q, a in PAIRS]
    train_file = write_jsonl(rows * 4, tmp_path / "train.jsonl")
    eval_file = write_jsonl(rows[:4], tmp_path / "eval.jsonl")
    results = run_sft(base_dir, train_file, tmp_path / "out", "--learning_rate", "3e-3", "--eval_file", str(eval_file))
    assert results["format"] == "instruction"
    assert results["trainable_params"] == results["total_params"]
    assert results["eval_loss_after"] < results["eval_loss_before"] - 1.0
    assert len(results["samples"]) == 3 and "--- prompt:" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "out" / "sft_results.json").read_text())["eval_loss_after"] == results["eval_loss_after"]
    )
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert reloaded.config.model_type == "simplegpt"
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"| held-out loss after | {results['eval_loss_after']:.4f} |" in card
    assert "all 46,720 parameters trained" in card and "LoRA settings" not in card


def test_gradient_accumulation_with_padding_equals_the_full_batch(tmp_path, base_dir, base_model):
    """4 micro-batches of 2 padded rows take the same step as one batch of 8: the num_items_in_batch trap. Each
    micro-batch has its own number of completion tokens, so averaging 4 per-micro-batch means would weight tokens
    unequally; the Trainer passes the whole batch's count to the model's loss instead. Plain SGD with lr 1 and no
    clipping makes the weight change the gradient itself."""
    from safetensors.torch import load_file

    rows = [{"instruction": q, "response": a * (1 + i % 3)} for i, (q, a) in enumerate(PAIRS)]  # uneven lengths
    train_file = write_jsonl(rows, tmp_path / "train.jsonl")
    eval_file = write_jsonl(rows[:2], tmp_path / "eval.jsonl")  # all 8 rows train, in one step
    exact = [
        "--max_steps",
        "1",
        "--logging_steps",
        "1",
        "--eval_file",
        str(eval_file),
        "--num_sample_generations",
        "0",
        "--optim",
        "sgd",
        "--learning_rate",
        "1.0",
        "--lr_scheduler_type",
        "constant",
        "--warmup_steps",
        "0",
        "--max_grad_norm",
        "0",
        "--weight_decay",
        "0",
        "--packing",
        "false",
    ]
    results = {
        "big": run_sft(base_dir, train_file, tmp_path / "big", *exact, "--per_device_train_batch_size", "8"),
        "accum": run_sft(
            base_dir,
            train_file,
            tmp_path / "accum",
            *exact,
            "--per_device_train_batch_size",
            "2",
            "--gradient_accumulation_steps",
            "4",
        ),
    }
    before = {k: v.detach() for k, v in base_model.state_dict().items()}
    steps = {}
    for name in ("big", "accum"):
        after = load_file(tmp_path / name / "model.safetensors")
        steps[name] = (results[name]["train_loss"], {k: before[k] - after[k] for k in after})  # one step: its loss
    (big_loss, big_grads), (accum_loss, accum_grads) = steps["big"], steps["accum"]
    assert accum_loss == pytest.approx(big_loss, rel=1e-5)
    assert big_grads.keys() == accum_grads.keys()
    assert max(g.abs().max() for g in big_grads.values()) > 1e-3  # the step moved the weights
    for key, grad in big_grads.items():
        torch.testing.assert_close(accum_grads[key], grad, atol=1e-6, rtol=1e-4, msg=key)


def test_torch_compile_sft_takes_the_eager_steps(tmp_path, base_dir):
    rows = [{"instruction": q, "response": a} for q, a in PAIRS]
    train_file = write_jsonl(rows, tmp_path / "train.jsonl")
    eval_file = write_jsonl(rows[:2], tmp_path / "eval.jsonl")
    common = [
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--eval_file",
        str(eval_file),
        "--num_sample_generations",
        "0",
    ]
    compiled = run_sft(
        base_dir,
        train_file,
        tmp_path / "compiled",
        *common,
        "--torch_compile",
        "true",
        "--torch_compile_backend",
        "aot_eager",
    )
    eager = run_sft(base_dir, train_file, tmp_path / "eager", *common)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-5)
    assert compiled["eval_loss_after"] == pytest.approx(eager["eval_loss_after"], abs=1e-5)
    assert compiled["eval_loss_after"] < compiled["eval_loss_before"]


def test_lora_trains_only_the_adapter_then_merges(tmp_path, base_dir, base_model, tiny_tokenizer):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in PAIRS] * 4
    train_file = write_jsonl(rows, tmp_path / "train.jsonl")
    out = tmp_path / "lora"
    results = run_sft(
        base_dir,
        train_file,
        out,
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_dropout",
        "0.0",
        "--learning_rate",
        "1e-2",
        "--merge",
    )
    assert results["format"] == "conversational"
    assert results["trainable_params"] == expected_lora_params(base_model.config, r=4)
    assert results["eval_loss_after"] < results["eval_loss_before"] - 0.3

    # Only the adapter is saved, a small fraction of the model's size.
    assert not (out / "model.safetensors").exists()
    adapter_bytes = (out / "adapter_model.safetensors").stat().st_size
    model_bytes = (base_dir / "model.safetensors").stat().st_size
    assert adapter_bytes < 0.15 * model_bytes
    card = (out / "README.md").read_text()
    assert (
        "| rank r | 4 |" in card and "| target modules | down_proj, k_proj, o_proj, q_proj, up_proj, v_proj |" in card
    )
    assert "AutoPeftModelForCausalLM" in card and "Loss on assistant tokens only" in card
    merged_card = (out / "merged" / "README.md").read_text()
    assert "merged into the base weights" in merged_card and "AutoPeftModelForCausalLM" not in merged_card
    assert hub_files(out / "merged")  # weights, config with auto_map, code, tokenizer, card: ready to push

    ids = torch.tensor(
        [tiny_tokenizer.apply_chat_template(rows[0]["messages"], tokenize=True, return_dict=True)["input_ids"]]
    )
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()
    merged = AutoModelForCausalLM.from_pretrained(results["merged_output_dir"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=0)
        assert (merged(input_ids=ids).logits - base_model(input_ids=ids).logits).abs().max() > 1e-2


def test_adapter_loads_where_hf_simplegpt_is_not_installed(tmp_path, base_dir):
    """The base checkpoint carries its modeling code (auto_map), so PEFT can rebuild it with trust_remote_code.
    The adapter is a DoRA one, so the DoRA path also trains, saves and reloads."""
    rows = [{"prompt": q, "completion": " " + a} for q, a in PAIRS] * 2
    out = tmp_path / "lora"
    run_sft(base_dir, write_jsonl(rows, tmp_path / "train.jsonl"), out, "--use_peft", "--use_dora", "--max_steps", "2")
    code = (
        "import sys; from peft import AutoPeftModelForCausalLM\n"
        "assert 'hf_simplegpt' not in sys.modules\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "print(type(model.get_base_model()).__name__, model.peft_config['default'].use_dora)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # remote code is copied into HF_HOME's modules cache
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "SimpleGPTForCausalLM True"


def test_model_converted_from_gpt2_fine_tunes_the_same_way(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=300,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=1,
            eos_token_id=2,
            initializer_range=0.2,  # a stand-in for pretrained weights, as in `base_model`
        )
    )
    base = tmp_path / "gpt2-simplegpt"
    convert_gpt2_to_simplegpt(gpt2).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    rows = [{"prompt": q, "completion": " " + a} for q, a in PAIRS] * 4
    train_file = tmp_path / "train.parquet"
    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(train_file)
    # Packed (padding-free) batches here, so a packed run also trains end to end.
    results = run_sft(
        base,
        train_file,
        tmp_path / "out",
        "--use_peft",
        "--lora_r",
        "4",
        "--learning_rate",
        "1e-2",
        "--packing",
        "true",
    )
    assert results["format"] == "prompt_completion"
    assert results["trainable_params"] == expected_lora_params(AutoModelForCausalLM.from_pretrained(base).config, 4)
    assert results["eval_loss_after"] < results["eval_loss_before"] - 0.3


def test_bad_input_stops_before_training(tmp_path, base_dir):
    unknown = write_jsonl([{"question": "hi", "label": 1}] * 8, tmp_path / "unknown.jsonl")
    with pytest.raises(ValueError, match=r"fields \['label', 'question'\]"):
        run_sft(base_dir, unknown, tmp_path / "a")

    rows = write_jsonl([{"instruction": q, "response": a} for q, a in PAIRS], tmp_path / "train.jsonl")
    with pytest.raises(ValueError, match=r"Available linear layers: \['down_proj', 'k_proj', 'lm_head'"):
        run_sft(base_dir, rows, tmp_path / "b", "--use_peft", "--lora_target_modules", "query", "value")

    prompt_completion = write_jsonl([{"prompt": q, "completion": a} for q, a in PAIRS], tmp_path / "pc.jsonl")
    with pytest.raises(ValueError, match="give --eval_file the training file's format"):
        run_sft(base_dir, rows, tmp_path / "e", "--eval_file", str(prompt_completion))

    with pytest.raises(ValueError, match="longer than the model's 64 learned positions"):
        run_sft(base_dir, rows, tmp_path / "d", "--max_length", "128")

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            run_sft(base_dir, rows, tmp_path / "c", "--use_peft", "--load_in_4bit")


@pytest.mark.parametrize("config", ["sft_tiny.yaml", "sft.yaml", "sft_qlora.yaml"])
def test_configs_parse(config, tmp_path):
    from trl import ModelConfig, SFTConfig

    from hf_simplegpt.training import parse_args

    path = REPO_ROOT / "recipes" / "configs" / config
    data_args, _, sft_args, model_args = parse_args(
        DataArguments,
        sft.SFTScriptArguments,
        SFTConfig,
        ModelConfig,
        args=["--config", str(path), "--output_dir", str(tmp_path)],
    )
    assert sft_args.max_length >= 64 and data_args.heldout_size > 0
    assert model_args.load_in_4bit == (config == "sft_qlora.yaml") == model_args.use_peft


def test_push_of_a_lora_run_uploads_the_adapter_its_card_and_results(tmp_path, base_dir, fake_hub):
    out = tmp_path / "lora"
    rows = write_jsonl([{"instruction": q, "response": a} for q, a in PAIRS], tmp_path / "train.jsonl")
    run_sft(
        base_dir,
        rows,
        out,
        "--use_peft",
        "--max_steps",
        "2",
        "--num_sample_generations",
        "0",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "me/tiny-lora",
    )
    (commit,) = fake_hub
    tokenizer = {name for name in TOKENIZER_FILES if (out / name).exists()}
    assert commit["repo_id"] == "me/tiny-lora" and "tokenizer.json" in tokenizer
    assert (
        set(commit["files"])
        == {"adapter_config.json", "adapter_model.safetensors", "README.md", "sft_results.json"} | tokenizer
    )
    assert "lora" in commit["card"] and commit["card"] == (out / "README.md").read_text()
