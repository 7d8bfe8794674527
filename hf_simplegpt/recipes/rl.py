"""Online RL from a reward: GRPO (default) or RLOO with TRL, against a reward model and/or Python reward functions.

    hf-simplegpt rl --config recipes/configs/rl_tiny.yaml --model_name_or_path SFT_DIR \
        --reward_model_name_or_path REWARD_DIR --train_file prompts.jsonl --output_dir out/rl \
        [--algorithm rloo] [--use_peft] [--reward_funcs keyword]

Rows hold a `prompt` (a string or chat messages). For each prompt the policy samples `num_generations` completions
with `generate`; each is scored by the reward model (`--reward_model_name_or_path`, a folder written by
`recipes/reward.py`) and by any reward functions named in `--reward_funcs` (the project's, by name: see
`hf_simplegpt.rewards.REWARD_FUNCTIONS`; keyword arguments from `--reward_func_kwargs`); `reward_weights` combines
them (weight 0 logs a function without optimising it). A dotted path to your own function is Python code that runs
in the job, so it needs `--allow_custom_reward_funcs true`. A KL penalty of strength `beta` keeps the policy near its starting point: a frozen
copy, or with `--use_peft` the base model with the adapter switched off. TRL logs the mean reward, the KL and the
completion length every `logging_steps`; this recipe also measures the mean reward on held-out prompts before and
after training, plots the reward and KL over steps (reward_curve.png) and keeps the log (trainer_state.json).

The reward model is wrapped in `hf_simplegpt.rewards.RewardModelScorer`, which formats text exactly as the reward
model was trained (plain text ends with EOS; chats use the chat template). Passing the folder to TRL directly would
score plain text without the EOS and give an almost flat reward.

On GPUs, generation can move to vLLM (`pip install vllm`): add `--use_vllm true --vllm_mode colocate` (shares the
training GPUs) or start `trl vllm-serve --model SFT_DIR` and add `--use_vllm true --vllm_mode server`. vLLM loads
SimpleGPT through its transformers backend (`--vllm_model_impl transformers`). Not exercised in this project's tests.
"""

import json
import os
import sys
from dataclasses import dataclass, field

import yaml
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, ModelConfig, RLOOConfig, RLOOTrainer

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import adapters, alignment, data, hub, rewards, safeguards, training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.evaluation import alignment_metrics

ALGORITHMS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


@dataclass
class RLArguments:
    """The algorithm and where rewards come from."""

    algorithm: str = field(default="grpo", metadata={"help": "grpo (default) or rloo."})
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Reward model folder written by recipes/reward.py."}
    )
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={"help": f"Reward functions by name ({sorted(rewards.REWARD_FUNCTIONS)}), or dotted import paths "
                  "with --allow_custom_reward_funcs."},  # fmt: skip
    )
    reward_func_kwargs: str | None = field(
        default=None,
        metadata={"help": 'JSON object: keyword arguments per reward function, e.g. {"keyword": {"keyword": "blue"}}.'},
    )
    allow_custom_reward_funcs: bool = field(
        default=False,
        metadata={"help": "Allow --reward_funcs to import Python code by dotted path (it runs in this job). On the "
                  "command line only: a --config file cannot set it (training.COMMAND_LINE_ONLY)."},  # fmt: skip
    )
    eval_max_new_tokens: int = field(default=24, metadata={"help": "Completion length when measuring held-out reward."})

    def __post_init__(self):
        if self.eval_max_new_tokens < 1:
            raise ValueError(f"--eval_max_new_tokens {self.eval_max_new_tokens} must be at least 1.")


def selected_algorithm(argv: list[str]) -> str:
    """The --algorithm value from the command line, else from the --config YAML, else grpo.

    It is needed before parsing: GRPO and RLOO take different configuration classes.
    """
    for i, arg in enumerate(argv):
        if arg == "--algorithm" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--algorithm="):
            return arg.split("=", 1)[1]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            continue
        with open(training.resolve_config(config), encoding="utf-8") as f:
            return (yaml.safe_load(f) or {}).get("algorithm", "grpo")
    return "grpo"


def build_reward_funcs(rl_args: RLArguments, device) -> list:
    """The reward model scorer (if a folder is given) followed by the named Python reward functions."""
    funcs = []
    if rl_args.reward_model_name_or_path:
        funcs.append(rewards.RewardModelScorer.from_pretrained(rl_args.reward_model_name_or_path, device=device))
    kwargs = json.loads(rl_args.reward_func_kwargs) if rl_args.reward_func_kwargs else {}
    unknown = sorted(set(kwargs) - set(rl_args.reward_funcs))
    if unknown:
        raise ValueError(f"--reward_func_kwargs names {unknown}, which are not in --reward_funcs {rl_args.reward_funcs}.")
    funcs += [rewards.load_reward_function(name, kwargs.get(name), rl_args.allow_custom_reward_funcs)
              for name in rl_args.reward_funcs]  # fmt: skip
    if not funcs:
        raise ValueError("No reward: pass --reward_model_name_or_path (a recipes/reward.py output) and/or --reward_funcs.")
    return funcs


@safeguards.guarded_main
def main(args=None):
    argv = list(sys.argv[1:] if args is None else args)
    algorithm = selected_algorithm(argv)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"--algorithm {algorithm!r} is unknown; use one of {sorted(ALGORITHMS)}.")
    config_class, trainer_class = ALGORITHMS[algorithm]
    data_args, rl_args, run_args, train_args, model_args = training.parse_args(
        DataArguments, RLArguments, safeguards.RunArguments, config_class, ModelConfig, args=argv
    )
    training.check_launch(train_args)  # FSDP/DeepSpeed or a CPU process group without use_cpu: refuse
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("Pass --model_name_or_path: the policy to optimise (e.g. the SFT output).")
    alignment.check_full_model_folder(path, "policy")
    if rl_args.reward_model_name_or_path:
        hub.check_model_source(rl_args.reward_model_name_or_path, "--reward_model_name_or_path")
    run = safeguards.start_run(train_args, run_args, inputs=[path, rl_args.reward_model_name_or_path])
    train, heldout = data.load_data(data_args, train_args.seed, check=alignment.validate_prompt_dataset)
    reward_funcs = build_reward_funcs(rl_args, train_args.device)

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    alignment.check_prompts_fit(tokenizer, train, train_args.max_completion_length, AutoConfig.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=model_args.dtype)
    peft_config = adapters.lora_config_from_model_args(model_args, model)
    model.to(train_args.device)

    heldout_prompts = heldout["prompt"]

    def heldout_rewards(policy) -> dict[str, float]:
        completions = alignment_metrics.sample_completions(policy, tokenizer, heldout_prompts, rl_args.eval_max_new_tokens,
                                                   seed=train_args.seed)  # fmt: skip
        names = [rewards.reward_name(f) for f in reward_funcs]
        return {name: sum(f(prompts=heldout_prompts, completions=completions)) / len(completions)
                for name, f in zip(names, reward_funcs)}  # fmt: skip

    before = heldout_rewards(model)
    trainer = trainer_class(model=model, reward_funcs=reward_funcs, args=train_args, train_dataset=train,
                            processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
    run.train(trainer)
    training.ready_for_inference(trainer.model)
    trainer.save_model(train_args.output_dir)  # before anything else can fail
    after = heldout_rewards(trainer.model)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(train_args.output_dir)
        trainer.state.save_to_json(os.path.join(train_args.output_dir, "trainer_state.json"))  # the logged curve
        alignment.plot_reward_curve(trainer.state.log_history, os.path.join(train_args.output_dir, "reward_curve.png"),
                                    title=f"{algorithm.upper()}: reward during training")  # fmt: skip
        metrics = {"algorithm": algorithm, "heldout_prompts": len(heldout)}
        for name in before:
            metrics[f"heldout_{name}_before"] = before[name]
            metrics[f"heldout_{name}_after"] = after[name]
            print(f"Held-out mean {name}: {before[name]:.3f} before -> {after[name]:.3f} after {algorithm.upper()}")
        alignment.save_metrics_and_card(
            train_args.output_dir,
            metrics,
            method="rl",
            base_model=path,
            summary=f"A SimpleGPT policy optimised with {algorithm.upper()} (TRL) against "
            + ", ".join(rewards.reward_name(f) for f in reward_funcs) + ".",
            hyperparameters={"algorithm": algorithm, "learning_rate": train_args.learning_rate,
                             "max_steps": train_args.max_steps, "beta": train_args.beta,
                             "num_generations": train_args.num_generations,
                             "max_completion_length": train_args.max_completion_length, "lora": bool(peft_config)},
        )  # fmt: skip
    return trainer


if __name__ == "__main__":
    main()
