"""hf_simplegpt.training: argument parsing (YAML + CLI, bundled configs), hardware defaults, launch checks."""

from types import SimpleNamespace

import pytest
import torch

from hf_simplegpt import training
from hf_simplegpt.corpus import CorpusArguments
from hf_simplegpt.pretraining import ModelArguments, PretrainingArguments
from hf_simplegpt.training import parse_args


def test_parse_args_cli_beats_yaml_beats_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("hidden_size: 96\nlearning_rate: 3.0e-4\ntrain_file: a.txt\nmax_steps: 7\n")
    data, model, train = parse_args(
        CorpusArguments,
        ModelArguments,
        PretrainingArguments,
        args=["--config", str(config), "--learning_rate", "5e-4", "--output_dir", str(tmp_path / "o")],
    )
    assert (model.hidden_size, data.train_file, train.max_steps) == (96, "a.txt", 7)  # YAML over field defaults
    assert train.learning_rate == 5e-4  # CLI over YAML
    assert model.num_hidden_layers == ModelArguments.num_hidden_layers  # untouched default
    # The reference design's optimisation defaults.
    assert (train.max_grad_norm, str(train.lr_scheduler_type.value)) == (1.0, "cosine")


@pytest.mark.parametrize("job, config", [("pretrain", "pretrain_tiny.yaml"), ("prune", "prune_tiny.yaml")])
def test_bundled_configs_state_only_what_differs_from_the_job_defaults(job, config, tmp_path):
    """One source of defaults per job, its dataclasses: a YAML key equal to the default would be a second one."""
    import yaml

    from hf_simplegpt.recipes.prune import PruningArguments, RecoveryConfig

    arguments = {
        "pretrain": (CorpusArguments, ModelArguments, PretrainingArguments),
        "prune": (CorpusArguments, PruningArguments, RecoveryConfig),
    }[job]
    out = ["--output_dir", str(tmp_path / "o")]
    defaults = parse_args(*arguments, args=out)
    configured = parse_args(*arguments, args=["--config", config, *out])
    with open(training.resolve_config(config), encoding="utf-8") as f:
        keys = yaml.safe_load(f)
    for key in keys:
        before, after = ([getattr(a, key) for a in parsed if hasattr(a, key)][0] for parsed in (defaults, configured))
        assert before != after, f"{config} sets {key}: {after!r}, the job's default already"


def test_parse_args_rejects_unknown_yaml_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("hiden_size: 96\n")
    with pytest.raises(ValueError, match="hiden_size"):
        parse_args(ModelArguments, args=["--config", str(config)])


def test_hardware_defaults_make_cpu_runs_use_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (train,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    assert train.use_cpu is True and not train.bf16 and not train.fp16
    (train,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path), "--use_cpu", "false"])
    assert train.use_cpu is False  # an explicit flag still wins


def test_hardware_defaults_turn_off_trl_bf16_on_cpu(monkeypatch, tmp_path):
    from trl import SFTConfig

    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (args,) = parse_args(SFTConfig, args=["--output_dir", str(tmp_path)])
    assert args.use_cpu is True and args.bf16 is False  # TRL alone would turn bf16 on (None -> True)


def test_fsdp_or_deepspeed_launch_without_gpus_is_rejected(monkeypatch, tmp_path):
    """accelerate would silently run plain DDP (MULTI_CPU) instead of FSDP on CPUs; say so instead."""
    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    training.check_launch(args)  # a plain CPU run is fine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="FSDP needs GPUs.*--multi_gpu --num_processes 2"):
        training.check_launch(args)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args.use_cpu = False
    with pytest.raises(ValueError, match="need --use_cpu true"):
        training.check_launch(args)
    # DeepSpeed runs on CPUs, but only without use_cpu (with it accelerate sets up DDP): the default says so.
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert training.hardware_defaults() == {"use_cpu": False, "ddp_backend": "gloo", "bf16": False}
    # (TrainingArguments with a backend would set up the process group here: the checks read these two fields.)
    training.check_launch(SimpleNamespace(use_cpu=False, ddp_backend="gloo"))
    for wrong in ({"use_cpu": True, "ddp_backend": "gloo"}, {"use_cpu": False, "ddp_backend": None}):
        with pytest.raises(ValueError, match="DeepSpeed on a CPU needs --use_cpu false --ddp_backend gloo"):
            training.check_launch(SimpleNamespace(**wrong))


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_an_engine_accelerate_replaced_stops_the_run(monkeypatch, engine):
    """Whatever the machine, a launch that asked for FSDP or DeepSpeed and got another engine does not train."""
    from accelerate.utils import DistributedType

    monkeypatch.setenv("WORLD_SIZE", "2")
    accelerator = SimpleNamespace(
        distributed_type=DistributedType.MULTI_CPU, device=torch.device("cpu"), num_processes=2
    )
    training.check_engine(accelerator)  # nothing asked for: fine
    monkeypatch.setenv(f"ACCELERATE_USE_{engine}", "true")
    with pytest.raises(ValueError, match=f"asked for {engine} but accelerate set up MULTI_CPU.*does not shard"):
        training.check_engine(accelerator)
    accelerator.distributed_type = DistributedType[engine]
    training.check_engine(accelerator)
    accelerator.num_processes = 1  # DeepSpeed on a CPU without a named backend: each process alone
    with pytest.raises(ValueError, match="started 2 processes but accelerate set up 1 .*train alone"):
        training.check_engine(accelerator)


def test_an_explicit_precision_replaces_the_hardware_one(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "hardware_defaults", lambda: {"bf16": True, "use_cpu": True})
    config = tmp_path / "c.yaml"
    config.write_text("bf16: false\n")
    (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    assert args.bf16 is True  # the hardware default applies when nothing is said
    for given in (["--bf16", "false"], ["--config", str(config)]):
        (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path), *given])
        assert args.bf16 is False and args.fp16 is False


def test_config_may_name_a_bundled_file_so_installed_packages_find_it(tmp_path):
    _, _, train = parse_args(
        CorpusArguments,
        ModelArguments,
        PretrainingArguments,
        args=["--config", "pretrain_tiny.yaml", "--output_dir", str(tmp_path)],
    )
    assert train.max_steps == 10  # read from recipes/configs/pretrain_tiny.yaml, wherever the command runs
    assert training.resolve_config("recipes/configs/sft_tiny.yaml").endswith("sft_tiny.yaml")
    assert "pretrain_tiny.yaml" in training.bundled_configs()


def test_missing_or_malformed_config_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"--config nope.yaml: no such file.*pretrain_tiny.yaml"):
        parse_args(ModelArguments, args=["--config", "nope.yaml"])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must hold a YAML mapping"):
        parse_args(ModelArguments, args=["--config", str(listing)])
