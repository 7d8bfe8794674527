"""Model cards and Hub publishing, shared by every recipe.

    write_model_card(output_dir, template="model_card.md", results=..., **context)  -> README.md
    push_to_hub(output_dir, "user/my-simplegpt")                                  -> uploads `hub_files`

A published folder holds exactly: safetensors weights, config.json (with `auto_map`), the remote-code
modules that `auto_map` names (configuration_simplegpt.py, modeling_simplegpt.py), tokenizer files,
generation_config.json (for a causal LM), README.md, and results.json when present; a LoRA adapter folder, its
adapter_config.json and adapter_model.safetensors instead of the model's files; a sentence-transformers encoder, its
modules.json and module folders (`sentence_transformers_files`). Nothing else (no optimizer states,
checkpoints, training_args.bin or pickled weights) leaves the machine.

Every job publishes the same way: `wants_push(args)` checks `--push_to_hub`/`--hub_model_id` before any work (and
turns a Trainer's own pushes off: they would upload checkpoints mid-run and a card of the Trainer's), and `push(folder,
args)` uploads once, after the job's card is written.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

# The card templates: the repository's model_cards/, carried inside the package (hf_simplegpt/templates links there).
TEMPLATES_DIR = resources.files("hf_simplegpt") / "templates"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


# ------------------------------------------------------------------------------------ local folder or Hub id


def is_local_path(name: str) -> bool:
    """A path rather than a Hub id: Hub ids are `name` or `owner/name`, never ./x, /x, ~/x or a/b/c, and `owner` is
    not a folder here."""
    name = str(name)
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.isdir(name.split("/")[0])


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_source(name: str, flag: str = "--model_name_or_path") -> None:
    """Raise ValueError, at once, when `name` is meant as a local model folder that is missing or holds no model:
    otherwise `from_pretrained` would spend a minute trying the Hub and end in a connection error."""
    name = str(name)
    if os.path.isdir(name):
        from .tokenization import check_tokenizer_files

        if os.path.isfile(os.path.join(name, "adapter_config.json")):
            check_tokenizer_files(name, flag)
            return
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ValueError(f"{flag} {name}: the folder holds no model (no config.json). Pass a saved model folder.")
        if not any(os.path.isfile(os.path.join(name, f)) for f in WEIGHT_FILES):
            raise ValueError(
                f"{flag} {name} holds a config.json but no weights (model.safetensors): the save did not "
                "finish, or this is not a model folder. Pass a complete saved model folder."
            )
        check_weights_match_config(name, flag)
        check_tokenizer_files(name, flag)
    elif is_local_path(name) or os.path.exists(name):
        raise ValueError(f"{flag} {name}: no such folder. Pass a saved model folder or a Hub id such as owner/name.")


def _some(keys, shown: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def check_weights_match_config(folder: str, flag: str = "--model_name_or_path") -> None:
    """Raise ValueError, naming the keys, when the weights of a saved model `folder` do not fit the model its
    config.json describes: weights it lacks (which loading would silently initialise at random), weights it has that
    the model does not (a config claiming fewer layers), or weights of another shape. transformers' own loading
    report decides (`output_loading_info`), on the meta device, so no tensor is read."""
    import warnings

    import torch
    import transformers
    from safetensors import SafetensorError
    from transformers import PretrainedConfig

    from . import modeling_simplegpt

    config = PretrainedConfig.get_config_dict(folder)[0]
    if config.get("quantization_config"):  # a quantizer's own weight layout, which its loader checks
        return
    architectures = config.get("architectures") or []
    cls = next(
        (
            getattr(module, a, None)
            for a in architectures[:1]
            for module in (modeling_simplegpt, transformers)
            if getattr(module, a, None) is not None
        ),
        None,
    )
    if cls is None:  # an architecture neither we nor transformers know (remote code): nothing to compare with
        return
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the refusal below says it once, with the keys
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, info = cls.from_pretrained(
                folder, device_map=torch.device("meta"), output_loading_info=True, ignore_mismatched_sizes=True
            )
    except SafetensorError as error:
        raise ValueError(
            f"{flag} {folder}: its weights file cannot be read ({error}): it is damaged or incomplete. "
            "Save or download the model again."
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    problems = []
    if info["missing_keys"]:
        problems.append(
            f"config.json describes {len(info['missing_keys'])} weight(s) the file lacks "
            f"({_some(info['missing_keys'])}), which loading would fill with random values"
        )
    if info["unexpected_keys"]:
        problems.append(
            f"the file holds {len(info['unexpected_keys'])} weight(s) the model of config.json has no "
            f"place for ({_some(info['unexpected_keys'])})"
        )
    if info["mismatched_keys"]:
        shapes = [f"{k} {tuple(saved)} vs {tuple(expected)}" for k, saved, expected in info["mismatched_keys"]]
        problems.append(
            f"{len(shapes)} weight(s) have another shape than config.json gives (file vs config: {_some(shapes, 3)})"
        )
    if problems:
        raise ValueError(
            f"{flag} {folder}: its config.json and its weights disagree: {'; '.join(problems)}. "
            "Was config.json edited, or copied from another model? Restore the config.json saved with "
            "these weights."
        )


def check_simplegpt_source(name: str, job: str, output_dir: str, flag: str = "--model_name_or_path") -> dict:
    """The config.json (as a dict) of `name`, a float SimpleGPT model folder or Hub id that `job` reads and never
    writes to; ValueError, before any work, when it is missing, not a SimpleGPT, already quantized, or when
    `output_dir` is that folder or lies inside it (or holds it)."""
    from transformers import PretrainedConfig

    check_model_source(name, flag)
    if os.path.isfile(os.path.join(name, "adapter_config.json")):
        raise ValueError(
            f"{flag} {name} is a LoRA adapter, not a whole model: {job} needs one. Merge it first "
            "(hf-simplegpt sft ... --merge, or hf_simplegpt.adapters.merge_adapter)."
        )
    config, _ = PretrainedConfig.get_config_dict(name)
    model_type = config.get("model_type")
    if model_type != "simplegpt":
        raise ValueError(
            f"{flag} {name}: {job} works on SimpleGPT models, and this folder's config.json says "
            f"model_type {model_type!r}. Pass a folder saved by hf_simplegpt (model_type 'simplegpt')."
        )
    quantized = config.get("quantization_config")
    if quantized:
        method = quantized.get("quant_type", {}).get("default", {}).get("_type", quantized.get("quant_method"))
        raise ValueError(
            f"{flag} {name}: the model is already quantized ({method}); {job} needs the float model. "
            "Pass the folder it was quantized from."
        )
    if os.path.isdir(name):
        source, out = Path(name).resolve(), Path(output_dir).resolve()
        if out == source or source in out.parents or out in source.parents:
            raise ValueError(
                f"--output_dir {output_dir} would write into (or over) the source model folder {name}; "
                "nothing is ever written there. Pass another folder."
            )
    return config


# ------------------------------------------------------------------------------------ model card


def eval_results_from(results: dict) -> list[EvalResult]:
    """`model-index` entries for the tasks of a results.json written by hf-simplegpt evaluate.

    results["mmlu"] gives overall and per-category accuracy; results["perplexity"] and results["bleu"]
    give one entry each, on the dataset named by their "dataset" field; results["retrieval"] three (recall@1,
    recall@10, MRR@10).
    """
    entries = []
    mmlu = results.get("mmlu")
    if mmlu:
        k = mmlu.get("num_fewshot", 0)
        subset = f", first {mmlu['limit']} per subject" if mmlu.get("limit") else ""
        scopes = [("all", mmlu["acc"])] + [(c, v["acc"]) for c, v in mmlu.get("categories", {}).items()]
        for scope, acc in scopes:
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type="cais/mmlu",
                    dataset_name=f"MMLU ({k}-shot{subset})",
                    dataset_config="all",
                    dataset_split="test",
                    dataset_args={"num_few_shot": k},
                    metric_type="acc",
                    metric_name="accuracy" if scope == "all" else f"accuracy ({scope})",
                    metric_value=round(acc, 4),
                )
            )
    crows = results.get("crows_pairs")
    if crows:
        scopes = [("all", crows)] + list(crows.get("bias_types", {}).items())
        metrics = [(scope, "pct_stereotype", v["pct_stereotype"]) for scope, v in scopes]
        metrics.append(("all", "likelihood_diff", crows["likelihood_diff"]))
        for scope, metric, value in metrics:
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type="crows_pairs",
                    dataset_name=f"CrowS-Pairs ({crows.get('dataset', 'english')})",
                    dataset_split="test",
                    metric_type=metric,
                    metric_name=metric if scope == "all" else f"{metric} ({scope})",
                    metric_value=round(value, 4),
                )
            )
    safety = results.get("safety")
    if safety:
        for scope, values in [("all", safety)] + list(safety.get("categories", {}).items()):
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type="safety",
                    dataset_name=f"Harmful-behaviour prompts ({safety.get('dataset', 'bundled')})",
                    metric_type="refusal_rate",
                    metric_name="refusal_rate" if scope == "all" else f"refusal_rate ({scope})",
                    metric_value=round(values["refusal_rate"], 4),
                )
            )
    holistic = results.get("holistic")
    if holistic:  # the report's own sections (accuracy, bias, safety, perplexity have their tasks' entries above)
        for metric, name in (
            ("ece", "calibration: MMLU ECE (10 bins)"),
            ("robust_acc", "robustness: MMLU accuracy, worst perturbation"),
            ("decode_tokens_per_s", "efficiency: decode tokens/s, batch 1"),
        ):
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type="holistic",
                    dataset_name="hf-simplegpt holistic report",
                    metric_type=metric,
                    metric_name=name,
                    metric_value=round(holistic[metric], 4),
                )
            )
    retrieval = results.get("retrieval")
    for metric in ("recall@1", "recall@10", "mrr@10") if retrieval else ():
        entries.append(
            EvalResult(
                task_type="sentence-similarity",
                task_name="Retrieval",
                dataset_type=retrieval["dataset"],
                dataset_name=retrieval["dataset"],
                metric_type=metric,
                metric_name=metric,
                metric_value=round(retrieval[metric], 4),
            )
        )
    for task, metric in (("perplexity", "perplexity"), ("bleu", "bleu")):
        if results.get(task):
            dataset = results[task].get("dataset", "custom")
            entries.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Text Generation",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    metric_type=metric,
                    metric_name=metric,
                    metric_value=round(results[task][metric], 4),
                )
            )
    return entries


def results_table(results: dict) -> str:
    """Markdown table (task, metric, value) of a results.json; empty string when there is nothing to show."""
    rows = []
    if results.get("mmlu"):
        m = results["mmlu"]
        k = m.get("num_fewshot", 0)
        rows.append((f"MMLU {k}-shot ({m['n']} questions)", "accuracy", f"{m['acc']:.4f} ± {m['acc_stderr']:.4f}"))
        rows += [(f"MMLU {k}-shot {c}", "accuracy", f"{v['acc']:.4f}") for c, v in m.get("categories", {}).items()]
    if results.get("perplexity"):
        p = results["perplexity"]
        rows.append((f"{p.get('dataset', 'texts')} ({p['num_tokens']} tokens)", "perplexity", f"{p['perplexity']:.3f}"))
    if results.get("bleu"):
        b = results["bleu"]
        rows.append((f"{b.get('dataset', 'pairs')}", "BLEU (sacrebleu)", f"{b['bleu']:.2f}"))
    if results.get("crows_pairs"):
        c = results["crows_pairs"]
        stderr = f" ± {c['pct_stereotype_stderr']:.4f}" if c.get("pct_stereotype_stderr") is not None else ""
        rows.append(
            (f"CrowS-Pairs ({c['n']} pairs)", "pct_stereotype (ideal 0.5)", f"{c['pct_stereotype']:.4f}{stderr}")
        )
        rows.append((f"CrowS-Pairs ({c['n']} pairs)", "likelihood_diff", f"{c['likelihood_diff']:.3f}"))
        rows += [
            (f"CrowS-Pairs {t} ({v['n']})", "pct_stereotype", f"{v['pct_stereotype']:.4f}")
            for t, v in c.get("bias_types", {}).items()
        ]
    if results.get("safety"):
        v = results["safety"]
        rows.append((f"Safety ({v['n']} harmful prompts)", "refusal rate", f"{v['refusal_rate']:.4f}"))
        if "judge_refusal_rate" in v:
            rows.append(
                (f"Safety ({v['n']} harmful prompts)", "refusal rate (judge)", f"{v['judge_refusal_rate']:.4f}")
            )
    if results.get("retrieval"):
        r = results["retrieval"]
        rows += [
            (f"{r['dataset']} retrieval ({r['queries']} queries)", m, f"{r[m]:.4f}")
            for m in ("recall@1", "recall@10", "mrr@10")
        ]
    if not rows:
        return ""
    lines = ["| Task | Metric | Value |", "|---|---|---|"] + [f"| {t} | {m} | {v} |" for t, m, v in rows]
    return "\n".join(lines)


def _model_facts(folder: Path) -> dict:
    """Architecture numbers from config.json for the card's details table (empty when there is no config)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text())
    keys = (
        "model_type",
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
        "vocab_size",
        "norm_position",
    )
    return {k: config[k] for k in keys if k in config}


# The Hub's task for each head, read from config.json's `architectures`; text generation when absent.
PIPELINE_TAGS = {"ForMaskedLM": "fill-mask", "ForSequenceClassification": "text-classification"}


def _pipeline_tag(folder: Path) -> str:
    if (folder / "modules.json").is_file():  # a sentence-transformers encoder (hf-simplegpt contrastive)
        return "sentence-similarity"
    config_path = folder / "config.json"
    architectures = json.loads(config_path.read_text()).get("architectures") if config_path.is_file() else None
    for suffix, tag in PIPELINE_TAGS.items():
        if any(name.endswith(suffix) for name in architectures or []):
            return tag
    return "text-generation"


def write_model_card(
    output_dir: str | Path,
    template: str = "model_card.md",
    *,
    results: dict | None = None,
    model_name: str | None = None,
    license: str = "apache-2.0",
    library_name: str = "transformers",
    language: str | list[str] = "en",
    datasets: list[str] | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    model_dir: str | Path | None = None,
    **context,
) -> Path:
    """Render `template` (a file in model_cards/ or a path) into `output_dir`/README.md and return its path.

    Metadata (YAML header) comes from the keyword arguments and `results` (a results.json dict, see
    `eval_results_from`, which fills `model-index`); the body is the Jinja template, rendered with
    `context` plus `model_name`, `results_table`, `config` (architecture numbers from config.json) and
    `results`. `model_dir` is the folder whose config.json fills `config` (default: `output_dir`).
    Templates show their own defaults for context keys that are not given.
    """
    output_dir = Path(output_dir)
    template_path = Path(template) if Path(template).is_file() else TEMPLATES_DIR / template
    if not template_path.is_file():
        available = sorted(p.name for p in TEMPLATES_DIR.glob("*.md"))
        raise ValueError(f"Model card template {template!r} not found; available in {TEMPLATES_DIR}: {available}.")
    results = results or {}
    model_name = model_name or output_dir.resolve().name
    pipeline_tag = _pipeline_tag(Path(model_dir) if model_dir else output_dir)
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        language=language,
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        datasets=datasets,
        base_model=base_model,
        tags=sorted({"simplegpt", pipeline_tag, "custom_code", *(tags or [])}),
        eval_results=eval_results_from(results) or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        results=results,
        results_table=results_table(results),
        config=_model_facts(Path(model_dir) if model_dir else output_dir),
        **context,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "README.md"
    card.save(path)
    return path


EVALUATION_START, EVALUATION_END = "<!-- hf-simplegpt evaluate -->", "<!-- /hf-simplegpt evaluate -->"


def merge_evaluation(card_path: str | Path, results: dict, model_name: str, notes: str = "") -> ModelCard:
    """The model card at `card_path` with `results` (a results.json of hf-simplegpt evaluate) merged in, the rest of
    the card untouched: `model-index` entries of the evaluated tasks replace earlier entries of the same task,
    dataset and metric (others are kept), and the body gains, or has replaced, one marked evaluation section."""
    card = ModelCard.load(card_path)
    new = eval_results_from(results)
    key = lambda r: (r.task_type, r.dataset_type, r.dataset_name, r.metric_type, r.metric_name)  # noqa: E731
    card.data.eval_results = [r for r in card.data.eval_results or [] if key(r) not in set(map(key, new))] + new
    card.data.model_name = card.data.model_name or model_name
    body = f"## Evaluation (hf-simplegpt evaluate)\n\n{results_table(results)}\n\n{notes}".rstrip()
    section = f"{EVALUATION_START}\n{body}\n{EVALUATION_END}"
    text = card.text
    if EVALUATION_START in text and EVALUATION_END in text:
        before, rest = text.split(EVALUATION_START, 1)
        card.text = before + section + rest.split(EVALUATION_END, 1)[1]
    else:
        card.text = text.rstrip("\n") + "\n\n" + section + "\n"
    return card


# -------------------------------------------------------------------------------------- publish


def _code_files(auto_map: dict) -> list[str]:
    """Module files that `auto_map` entries such as "modeling_simplegpt.SimpleGPTModel" point to."""
    names = set()
    for value in auto_map.values():
        for ref in value if isinstance(value, (list, tuple)) else [value]:
            if ref:
                names.add(ref.split("--")[-1].rsplit(".", 1)[0] + ".py")
    return sorted(names)


def sentence_transformers_files(folder: str | Path) -> list[str]:
    """The files of a sentence-transformers folder beyond the backbone's: modules.json, its configs, and each module's
    files (relative paths such as 1_Pooling/config.json); empty for any other folder."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return []
    names = ["modules.json"] + [
        n for n in ("config_sentence_transformers.json", "sentence_bert_config.json") if (folder / n).is_file()
    ]
    for module in json.loads((folder / "modules.json").read_text()):
        if module.get("path"):
            names += sorted(str(p.relative_to(folder)) for p in (folder / module["path"]).rglob("*") if p.is_file())
    return names


def hub_files(folder: str | Path, extra_files: tuple[str, ...] = (), present: set[str] = frozenset()) -> list[str]:
    """The exact files (relative names, sorted) that `push_to_hub` uploads from `folder`, plus those of
    `extra_files` that are present (e.g. a recipe's loss_curve.png and trainer_state.json); `present` names files
    that count as present although they come from elsewhere.

    Raises ValueError naming what is missing: safetensors weights, config.json with auto_map, the code
    files auto_map names, tokenizer files, generation_config.json (not for a sentence-transformers folder), README.md.
    `extra_files` may name files in subfolders (`sentence_transformers_files`).
    """
    folder = Path(folder)
    present = set(present) | ({p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set())
    present |= {n for n in extra_files if (folder / n).is_file()}  # files of subfolders (1_Pooling/config.json)
    missing = []
    if "adapter_config.json" in present:
        # A LoRA adapter (e.g. `--use_peft` without merging): it loads onto its base model, which brings the config,
        # the code and the generation config.
        files = ["adapter_config.json", "adapter_model.safetensors"]
        if "adapter_model.safetensors" not in present:
            missing.append("adapter_model.safetensors (save the PEFT model with save_pretrained)")
    else:
        files = _model_files(folder, present, missing)
    tokenizer = [n for n in TOKENIZER_FILES if n in present]
    if "tokenizer_config.json" not in present or not ({"tokenizer.json", "vocab.json"} & present):
        missing.append("tokenizer files (tokenizer.json + tokenizer_config.json; tokenizer.save_pretrained)")
    if "README.md" not in present:
        missing.append("README.md (hf_simplegpt.hub.write_model_card)")
    if missing:
        raise ValueError(f"{folder} is not ready for the Hub; missing: {'; '.join(missing)}. Found: {sorted(present)}.")
    extra = [n for n in ("results.json", *extra_files) if n in present]
    return sorted(set(files + tokenizer + ["README.md"] + extra))


def _model_files(folder: Path, present: set[str], missing: list[str]) -> list[str]:
    """A whole model's files for `hub_files`: weights, config.json, the code auto_map names, and a causal LM's
    generation_config.json; what is missing is appended to `missing`."""
    shards = sorted(n for n in present if n.startswith("model-") and n.endswith(".safetensors"))
    if "model.safetensors" in present:
        files = ["model.safetensors"]
    elif shards and "model.safetensors.index.json" in present:
        files = shards + ["model.safetensors.index.json"]
    else:
        files = []
        missing.append("safetensors weights (model.safetensors; save with save_pretrained, safe serialization)")
    if "config.json" not in present:
        missing.append("config.json")
        return files
    config = json.loads((folder / "config.json").read_text())
    files.append("config.json")
    if config.get("auto_map"):
        code = _code_files(config["auto_map"])
        missing += [f"{name} (named by auto_map)" for name in code if name not in present]
        files += code
    else:
        missing.append(
            "auto_map in config.json (save the model with hf_simplegpt imported: its classes register for auto_map)"
        )
    # save_pretrained writes a generation config for models that generate (not for a reward model).
    if any(a.endswith("ForCausalLM") for a in config.get("architectures") or []) or "generation_config.json" in present:
        files.append("generation_config.json")
        if "generation_config.json" not in present:
            missing.append("generation_config.json (model.save_pretrained)")
    return files


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload SimpleGPT model",
    extra_files: tuple[str, ...] = (),
    replacements: dict[str, str | Path] | None = None,
) -> str:
    """Create `repo_id` if needed and upload exactly `hub_files(folder, extra_files)` in one commit; returns its URL.

    `replacements` maps file names to local files sent in their place (and checked as if they were in `folder`), so
    that a job can publish a new card and results without writing into the model folder.
    """
    from huggingface_hub import CommitOperationAdd

    replacements = {name: Path(path) for name, path in (replacements or {}).items()}
    files = hub_files(folder, extra_files, present=set(replacements))
    sources = {name: replacements.get(name, Path(folder) / name) for name in files}
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in sources.items()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(
            repo_id=repo_id, operations=operations, commit_message=commit_message, repo_type="model"
        )
    except Exception as error:
        if not is_connection_error(error):
            raise
        raise HubUnreachableError(
            f"The Hugging Face Hub at {api.endpoint} is unreachable ({type(error).__name__}), so nothing was "
            f"uploaded to {repo_id}. The local folder {folder} is complete: upload it later with "
            f"`hf upload {repo_id} {folder}`, or rerun with network access."
        ) from error
    return str(getattr(info, "commit_url", info))


def wants_push(args) -> bool:
    """Whether a job publishes its folder when done (`--push_to_hub`): the one check, before any work, that
    `--hub_model_id` names the repository. A Trainer's own pushes are turned off (`push_to_hub = False` on
    `TrainingArguments`): they would upload checkpoints mid-run and a card of the Trainer's; the job calls `push`
    once, after its card is written."""
    from transformers import TrainingArguments

    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id <user>/<model-name>.")
    wanted = bool(args.push_to_hub)
    if isinstance(args, TrainingArguments):
        args.push_to_hub = False
    return wanted


def push(folder: str | Path, args, extra_files: tuple[str, ...] = (), replacements: dict | None = None) -> str:
    """How every job publishes: `push_to_hub(folder, ...)` to `args.hub_model_id`, with the job's
    `--hub_private_repo` and `--hub_token` when it has them. Logs and returns the commit URL."""
    url = push_to_hub(
        folder,
        args.hub_model_id,
        private=getattr(args, "hub_private_repo", None),
        token=getattr(args, "hub_token", None),
        extra_files=extra_files,
        replacements=replacements,
    )
    logger.info("Pushed %s to %s", folder, url)
    return url


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached for an upload; the local output is complete."""


# How the HTTP clients under huggingface_hub (httpx, or its fork httpx2) and the socket layer say "no connection".
_CONNECTION_ERRORS = {"TransportError", "ConnectError", "ConnectTimeout", "NetworkError", "OfflineModeIsEnabled"}


def is_connection_error(error: BaseException | None) -> bool:
    """True when `error`, or an exception it was raised from, is a failure to reach a host (no network, DNS, refused,
    timeout, offline mode) rather than an answer from the Hub (401, 404, ...)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError, socket_errors())) or any(
            cls.__name__ in _CONNECTION_ERRORS for cls in type(error).__mro__
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def socket_errors() -> tuple[type[BaseException], ...]:
    import socket

    return (socket.gaierror, socket.timeout)
