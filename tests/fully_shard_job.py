"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): train a tiny SimpleGPT for a few steps
with torch's FSDP2 (`fully_shard`, each SimpleGPTBlock its own unit, as recipes/accelerate/fsdp.yaml configures
accelerate) or with DDP, on the same data; write the losses, the trained model's logits on a fixed batch (computed
in memory, sharded) and, for FSDP2, the full state dict gathered into a saved model folder.

    python -m torch.distributed.run --nproc_per_node 2 tests/fully_shard_job.py fsdp2|ddp OUTPUT_DIR
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.modeling_simplegpt import SimpleGPTBlock

STEPS, BATCH, LENGTH = 5, 4, 16  # BATCH rows per process


def main(engine: str, output_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial weights on every process, for both engines
    config = SimpleGPTConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=LENGTH,
        dropout=0.0,
    )
    model = SimpleGPTForCausalLM(config)
    data = torch.randint(0, 128, (STEPS, world * BATCH, LENGTH), generator=torch.Generator().manual_seed(1))
    probe = torch.randint(0, 128, (2, LENGTH), generator=torch.Generator().manual_seed(2))
    if engine == "fsdp2":
        for module in model.modules():
            if isinstance(module, SimpleGPTBlock):
                fully_shard(module)
        fully_shard(model)
        trained = model
    else:
        trained = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2)
    losses = []
    for step in range(STEPS):
        rows = data[step, rank * BATCH : (rank + 1) * BATCH]  # this process's shard of the global batch
        loss = trained(rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)  # the mean over processes: the global batch's loss
        losses.append(global_loss.item() / world)
    with torch.no_grad():
        logits = trained(probe).logits  # every process runs the sharded forward
    if engine == "fsdp2":
        # The full state dict on rank 0 (what accelerate's FULL_STATE_DICT saves), into an ordinary model folder.
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            SimpleGPTForCausalLM(config).save_pretrained(f"{output_dir}/model", state_dict=state)
    if rank == 0:
        record = {
            "losses": losses,
            "probe": probe.tolist(),
            "logits": logits.tolist(),
            "sharded": [type(p).__name__ for p in model.parameters()][:1],
        }
        with open(f"{output_dir}/{engine}.json", "w") as f:
            json.dump(record, f)
    dist.barrier()  # leave together: a gloo rank that tears down while its peer is still writing can hang in destroy
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
