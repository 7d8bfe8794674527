"""Contrastive learning: train a SimpleGPT as a sentence encoder on similar-text pairs (sentence-transformers).

    hf-simplegpt make-pairs --text_file corpus.txt --output pairs.jsonl      # consecutive lines of each passage
    hf-simplegpt contrastive --config recipes/configs/contrastive.yaml --model_name_or_path outputs/pretrain-default \
        --train_file pairs.jsonl --output_dir outputs/encoder [--pooling last-token] [--attention bidirectional]
    accelerate launch recipes/contrastive.py ...               # the same job, the same flags

Rows hold an `anchor` and a `positive` text, optionally a hard `negative` (jsonl/csv/parquet, or a Hub dataset with
those columns). Training is sentence-transformers' `SentenceTransformerTrainer` with `MultipleNegativesRankingLoss`:
for each anchor, its positive must score above every other positive (and negative) of the batch, so a bigger batch
means more negatives (`--mini_batch_size` computes it in GradCache mini-batches: big batches in little memory). The
`no_duplicates` batch sampler keeps a text from appearing twice in one batch.

The model starts from --model_name_or_path (a pretrained or SFT SimpleGPT folder; `--from_scratch true` keeps only
its shape and tokenizer). Retrieval on the held-out pairs (recall@1, recall@10, MRR@10, sentence-transformers'
`InformationRetrievalEvaluator`) is measured before and after training. The output folder is an ordinary
sentence-transformers model: `SentenceTransformer(folder, trust_remote_code=True)` loads it anywhere, and
`AutoModel.from_pretrained(folder, trust_remote_code=True)` its SimpleGPT backbone. Writes `contrastive.json` and a
model card.
"""

import json
import logging
import os
from dataclasses import asdict, dataclass, field

try:
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
except ModuleNotFoundError as error:  # the extra is not installed
    raise SystemExit(f"hf-simplegpt contrastive needs sentence-transformers ({error}): pip install -e '.[embeddings]'")
from transformers import set_seed

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import contrastive, hub, safeguards
from hf_simplegpt.data import DataArguments
from hf_simplegpt.hub import check_simplegpt_source, sentence_transformers_files, write_model_card
from hf_simplegpt.training import parse_job_args

logger = logging.getLogger("hf_simplegpt.contrastive")


@dataclass
class EncoderArguments:
    """The encoder: which SimpleGPT, how it attends, how a text becomes one vector."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "SimpleGPT folder (pretrained or SFT) to start from; only read."}
    )
    pooling: str = field(
        default="mean",
        metadata={
            "help": "mean: average of the tokens' last hidden states; last-token: the hidden state of an EOS "
            "token appended to every text."
        },
    )
    attention: str = field(
        default="causal",
        metadata={
            "help": "causal: the language model's attention (measured best from a causally pretrained model, "
            "docs/contrastive.md); bidirectional: every token sees the whole text (config.is_causal false, as the "
            "masked-LM head)."
        },
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Keep only the shape and tokenizer of --model_name_or_path: random weights."}
    )
    max_seq_length: int | None = field(default=None, metadata={"help": "Longest text in tokens; default: the context."})
    scale: float = field(
        default=20.0,
        metadata={"help": "MultipleNegativesRankingLoss scale: cosine similarities times this (1/temperature)."},
    )
    mini_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Set: CachedMultipleNegativesRankingLoss (GradCache), the same loss and gradients over the whole "
            "--per_device_train_batch_size, computed this many texts at a time, so a batch with many more "
            "negatives fits in memory."
        },
    )

    def __post_init__(self):
        contrastive.check_choices(self.pooling, self.attention)
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError(f"--max_seq_length {self.max_seq_length} must be at least 2.")
        if not self.scale > 0:
            raise ValueError(f"--scale {self.scale} must be > 0.")
        if self.mini_batch_size is not None and self.mini_batch_size < 1:
            raise ValueError(
                f"--mini_batch_size {self.mini_batch_size} must be at least 1 (or unset for the uncached loss)."
            )


@dataclass
class ContrastiveConfig(SentenceTransformerTrainingArguments):
    """sentence-transformers' training arguments with this job's defaults; every TrainingArguments flag applies."""

    output_dir: str | None = field(default="outputs/contrastive", metadata={"help": "Where the encoder goes."})
    per_device_train_batch_size: int = field(
        default=64, metadata={"help": "Pairs per batch: each anchor's negatives are the other positives of its batch."}
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Texts per forward when encoding."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup steps (int) or fraction of training (<1)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the pairs."})
    batch_sampler: str = field(default="no_duplicates", metadata={"help": "no_duplicates: no text twice in one batch."})
    logging_steps: float = field(default=10, metadata={"help": "Log the loss every N steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints during training: no/steps/epoch."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers to log to."})
    seed: int = field(default=42, metadata={"help": "Seed: held-out split, initialisation, data order."})


def check_arguments(encoder: EncoderArguments, data: DataArguments, train_args: ContrastiveConfig) -> None:
    """What can be wrong with the flags, checked before any data or weights are read."""
    if encoder.model_name_or_path is None:
        raise ValueError(
            "Pass --model_name_or_path: the SimpleGPT folder the encoder starts from (with "
            "--from_scratch true, only its shape and tokenizer are used)."
        )
    check_simplegpt_source(encoder.model_name_or_path, "contrastive", train_args.output_dir)
    if not (data.train_file or data.dataset_name):
        raise ValueError(
            "Pass --train_file pairs.jsonl (rows with anchor, positive[, negative]) or --dataset_name; "
            "`hf-simplegpt make-pairs` writes pairs from a text file or an MMLU folder."
        )


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    data_args, encoder_args, run_args, train_args = parse_job_args(
        DataArguments, EncoderArguments, safeguards.RunArguments, ContrastiveConfig, args=argv
    )
    check_arguments(encoder_args, data_args, train_args)
    source, out = encoder_args.model_name_or_path, train_args.output_dir
    push = hub.wants_push(train_args)
    run = safeguards.start_run(train_args, run_args, inputs=[source])
    train, heldout = contrastive.load_pairs(data_args, seed=train_args.seed)

    set_seed(train_args.seed)
    encoder = contrastive.build_encoder(
        source,
        encoder_args.pooling,
        encoder_args.attention,
        from_scratch=encoder_args.from_scratch,
        max_seq_length=encoder_args.max_seq_length,
        device=str(train_args.device),
    )
    evaluator = contrastive.retrieval_evaluator(heldout.to_list(), batch_size=train_args.per_device_eval_batch_size)
    before = contrastive.summarize(evaluator(encoder), evaluator)
    logger.info("Held-out retrieval before training: %s", before)

    if encoder_args.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(
            encoder, scale=encoder_args.scale, mini_batch_size=encoder_args.mini_batch_size
        )
    else:
        loss = MultipleNegativesRankingLoss(encoder, scale=encoder_args.scale)
    trainer = SentenceTransformerTrainer(model=encoder, args=train_args, train_dataset=train, loss=loss)
    run.train(trainer)
    encoder = trainer.model
    after = contrastive.summarize(evaluator(encoder), evaluator)
    logger.info("Held-out retrieval after training: %s", after)
    if not trainer.is_world_process_zero():
        return {}

    encoder.save_pretrained(out)
    tokens = sum(len(encoder.tokenizer(text)["input_ids"]) for column in train.column_names for text in train[column])
    report = {
        "source": source,
        "from_scratch": encoder_args.from_scratch,
        "pooling": encoder_args.pooling,
        "attention": encoder_args.attention,
        "max_seq_length": encoder.max_seq_length,
        "embedding_dimension": encoder.get_embedding_dimension(),
        "train_pairs": len(train),
        "columns": train.column_names,
        "train_tokens_per_epoch": tokens,
        "steps": trainer.state.global_step,
        "batch_size": train_args.per_device_train_batch_size
        * train_args.gradient_accumulation_steps
        * train_args.world_size,
        "learning_rate": train_args.learning_rate,
        "scale": encoder_args.scale,
        "loss": type(loss).__name__,
        "seed": train_args.seed,
        "heldout": {"before": before, "after": after},
    }
    with open(os.path.join(out, "contrastive.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(
        f"Held-out recall@10: {before['recall@10']:.3f} before -> {after['recall@10']:.3f} after training "
        f"({after['queries']} queries, {after['documents']} documents)"
    )
    write_model_card(
        out,
        "contrastive.md",
        library_name="sentence-transformers",
        base_model=None if encoder_args.from_scratch else source,
        tags=["sentence-transformers", "sentence-similarity", "feature-extraction", "contrastive"],
        repo_id=train_args.hub_model_id or os.path.basename(os.path.abspath(out)),
        report=report,
        data_source=data_args.dataset_name or data_args.train_file,
        training=asdict(encoder_args),
    )
    if push:
        hub.push(out, train_args, extra_files=("contrastive.json", *sentence_transformers_files(out)))
    return report


if __name__ == "__main__":
    main()
