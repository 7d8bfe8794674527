"""Online RL with TRL's GRPOTrainer against a reward model and/or Python reward functions
(group-relative advantages: each completion's reward against its prompt's group).

    hf-simplegpt grpo --config recipes/configs/grpo_tiny.yaml --model_name_or_path SFT_DIR \
        --reward_model_name_or_path REWARD_DIR --train_file prompts.jsonl --output_dir out/grpo \
        [--use_peft] [--reward_funcs keyword]
    accelerate launch recipes/grpo.py ...                 # the same job, the same flags

Rows hold a `prompt` (a string or chat messages). The job is the one `hf-simplegpt rloo` runs too, with TRL's other
trainer: `hf_simplegpt.alignment.train_online_rl` says what it measures and writes; docs/alignment.md lists the flags.
"""

from trl import GRPOConfig, GRPOTrainer

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import alignment, safeguards


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Run GRPO; returns the held-out rewards before and after (alignment_metrics.json)."""
    return alignment.train_online_rl(argv, GRPOConfig, GRPOTrainer)


if __name__ == "__main__":
    main()
