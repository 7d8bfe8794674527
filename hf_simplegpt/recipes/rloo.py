"""Online RL with TRL's RLOOTrainer against a reward model and/or Python reward functions
(REINFORCE leave-one-out: each completion's reward against the others of its prompt).

    hf-simplegpt rloo --config recipes/configs/rloo_tiny.yaml --model_name_or_path SFT_DIR \
        --reward_model_name_or_path REWARD_DIR --train_file prompts.jsonl --output_dir out/rloo \
        [--use_peft] [--reward_funcs keyword]
    accelerate launch recipes/rloo.py ...                 # the same job, the same flags

Rows hold a `prompt` (a string or chat messages). The job is the one `hf-simplegpt grpo` runs too, with TRL's other
trainer: `hf_simplegpt.alignment.train_online_rl` says what it measures and writes; docs/alignment.md lists the flags.
"""

from trl import RLOOConfig, RLOOTrainer

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import alignment, safeguards


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Run RLOO; returns the held-out rewards before and after (alignment_metrics.json)."""
    return alignment.train_online_rl(argv, RLOOConfig, RLOOTrainer)


if __name__ == "__main__":
    main()
