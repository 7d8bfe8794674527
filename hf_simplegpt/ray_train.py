"""Ray Train, for users whose cluster is Ray: `hf-simplegpt <job> --ray_workers N ...` runs the job's own code in
N Ray Train workers instead of `accelerate launch`'s processes.

Ray's `TorchTrainer` starts the workers and one torch.distributed process group over them (NCCL on GPUs, gloo on
CPUs); inside each, the job runs as under accelerate (the Trainer's DDP over that group) with two additions from Ray's
transformers integration: `prepare_trainer` (Ray Data datasets, when given) and `RayTrainReportCallback`, which
reports every log's metrics and every saved checkpoint to Ray (fault tolerance, Ray's result and checkpoint record
in `<output_dir>/ray_results`).

    hf-simplegpt pretrain --ray_workers 4 --config my_pretrain.yaml --output_dir /shared/run1
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

# Set in the workers: the job's `GuardedRun.train` then prepares its Trainer for Ray (`prepare`).
RAY_WORKER_ENV = "HF_SIMPLEGPT_RAY_WORKER"


def _run_job(config: dict) -> None:
    os.environ[RAY_WORKER_ENV] = "1"
    importlib.import_module(config["module"]).main(config["args"])


def launch(module: str, job_args: Sequence[str], workers: int):
    """Run `module.main(job_args)` in `workers` Ray Train workers (a GPU each where torch sees GPUs); returns Ray's
    `Result` (metrics, checkpoint, error)."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if workers < 1:
        raise SystemExit(f"--ray_workers {workers} must be at least 1.")
    args = list(job_args)
    output_dir = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--output_dir"), "outputs")
    trainer = TorchTrainer(
        _run_job,
        train_loop_config={"module": module, "args": args},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(
            storage_path=os.path.abspath(os.path.join(output_dir, "ray_results")),
            name=os.path.basename(os.path.abspath(output_dir)),
        ),
    )
    return trainer.fit()


def prepare(trainer) -> None:
    """Inside a Ray Train worker, report to Ray and accept Ray Data datasets; elsewhere do nothing."""
    if os.environ.get(RAY_WORKER_ENV) != "1":
        return
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    trainer.add_callback(RayTrainReportCallback())
    prepare_trainer(trainer)
