"""The transformers model contract, measured: causality, padding, caching, generation, kernels, save/load."""

import copy
import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AttentionInterface,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    ContinuousBatchingConfig,
    DynamicCache,
    GenerationConfig,
    StaticCache,
    pipeline,
)
from transformers.distributed.pipeline_parallel import PipelineIdentityLayer
from transformers.generation import CompileConfig
from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import create_causal_mask

from hf_simplegpt import (
    SimpleGPTConfig,
    SimpleGPTForCausalLM,
    SimpleGPTForMaskedLM,
    SimpleGPTForSequenceClassification,
    SimpleGPTModel,
)
from hf_simplegpt.modeling_simplegpt import SimpleGPTAttention
from tests.conftest import tiny_config_kwargs

ATOL = 1e-5
# Attention shapes the contract must hold for: the square default (heads x head_dim == hidden_size) and a pruned-style
# one whose 4 heads of 12 (48 wide) differ from the 32-wide residual stream.
HEAD_SHAPES = pytest.mark.parametrize(
    "head_shape", [{}, {"head_dim": 12}], ids=["square", "head_dim_x_heads_ne_hidden"]
)


def make_model(**overrides) -> SimpleGPTForCausalLM:
    torch.manual_seed(0)
    return SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(**overrides))).eval()


def random_ids(batch=2, length=12, low=3, high=300, seed=1):
    return torch.randint(low, high, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- the maths


def reference_forward(model: SimpleGPTForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The reference design's architecture written out by hand, with its four bugs fixed; logits (batch, seq, vocab)."""
    config, net = model.config, model.model
    batch, length = ids.shape
    heads, head_dim = config.num_attention_heads, config.head_dim
    x = net.embed_tokens.weight[ids] + net.embed_positions.weight[:length]
    future = torch.ones(length, length, dtype=torch.bool).triu(1)  # bug 1: the causal mask
    for block in net.layers:
        attn = block.self_attn

        def split(t):  # bug 2: (batch, seq, hidden) -> (batch, heads, seq, head_dim)
            return t.view(batch, length, heads, head_dim).transpose(1, 2)

        q, k, v = (split(F.linear(x, p.weight, p.bias)) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # bug 3: sqrt(head_dim), not sqrt(hidden)
        context = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        context = context.transpose(1, 2).reshape(batch, length, -1)  # bug 4: transpose back, then concatenate
        x = block.attention_norm(x + F.linear(context, attn.o_proj.weight, attn.o_proj.bias))
        x = block.mlp_norm(x + block.mlp.down_proj(F.gelu(block.mlp.up_proj(x))))
    return model.lm_head(net.norm(x))


@HEAD_SHAPES
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_logits_equal_a_hand_written_reference_of_the_fixed_seed(attn_implementation, head_shape):
    model = make_model(**head_shape)
    model.set_attn_implementation(attn_implementation)
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference_forward(model, ids), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_changing_a_later_token_leaves_earlier_logits_unchanged(attn_implementation):
    model = make_model()
    model.set_attn_implementation(attn_implementation)
    ids = random_ids()
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 300
    with torch.no_grad():
        before, after = model(ids).logits, model(changed).logits
    assert torch.equal(before[:, :7], after[:, :7])
    assert (before[:, 7:] - after[:, 7:]).abs().max() > 1e-3


def test_pre_norm_blocks_differ_from_post_norm_and_stay_causal():
    pre, post = make_model(norm_position="pre"), make_model(norm_position="post")
    ids = random_ids()
    with torch.no_grad():
        assert (pre(ids).logits - post(ids).logits).abs().max() > 1e-3
        changed = ids.clone()
        changed[:, -1] = 5
        torch.testing.assert_close(pre(ids).logits[:, :-1], pre(changed).logits[:, :-1], atol=0, rtol=0)


@HEAD_SHAPES
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_left_and_right_padding_do_not_change_the_real_tokens_logits(attn_implementation, head_shape):
    model = make_model(**head_shape)
    model.set_attn_implementation(attn_implementation)
    short, long_ = random_ids(1, 5, seed=2), random_ids(1, 9, seed=3)
    pad = torch.zeros(1, 4, dtype=torch.long)
    with torch.no_grad():
        alone = model(short).logits
        right = model(torch.cat([short, pad], 1), attention_mask=torch.tensor([[1] * 5 + [0] * 4])).logits
        left = model(torch.cat([pad, short], 1), attention_mask=torch.tensor([[0] * 4 + [1] * 5])).logits
        batch = model(
            torch.cat([torch.cat([pad, short], 1), long_]), attention_mask=torch.tensor([[0] * 4 + [1] * 5, [1] * 9])
        ).logits
    torch.testing.assert_close(right[:, :5], alone, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(left[:, 4:], alone, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(batch[:1, 4:], alone, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(batch[1:], model(long_).logits, atol=ATOL, rtol=1e-4)


@HEAD_SHAPES
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_documents_do_not_attend_to_each_other(attn_implementation, head_shape):
    """Padding-free packing: one row, position_ids restarting per document, no attention_mask."""
    model = make_model(**head_shape)
    model.set_attn_implementation(attn_implementation)
    first, second = random_ids(1, 6, seed=4), random_ids(1, 5, seed=5)
    packed = torch.cat([first, second], 1)
    position_ids = torch.tensor([list(range(6)) + list(range(5))])
    with torch.no_grad():
        logits = model(packed, position_ids=position_ids).logits
        torch.testing.assert_close(logits[:, :6], model(first).logits, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(logits[:, 6:], model(second).logits, atol=ATOL, rtol=1e-4)


def test_masked_lm_is_bidirectional():
    torch.manual_seed(0)
    model = SimpleGPTForMaskedLM(SimpleGPTConfig(**tiny_config_kwargs())).eval()
    assert model.config.is_causal is False
    ids = random_ids()
    changed = ids.clone()
    changed[:, -1] = 5
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    with torch.no_grad():
        out = model(ids, labels=labels)
        assert (out.logits[:, 0] - model(changed).logits[:, 0]).abs().max() > 1e-4  # the first token sees the last
    expected = F.cross_entropy(out.logits[:, 3], ids[:, 3])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_masked_lm_leaves_the_config_it_was_given_causal(attn_implementation):
    """Building the masked model must not turn a causal model sharing its config object bidirectional."""
    config = SimpleGPTConfig(**tiny_config_kwargs(), attn_implementation=attn_implementation)
    torch.manual_seed(0)
    before = SimpleGPTForCausalLM(config).eval()
    masked = SimpleGPTForMaskedLM(config)
    after = SimpleGPTForCausalLM(config).eval()
    ids = random_ids()
    changed = ids.clone()
    changed[:, -1] = 5
    with torch.no_grad():
        for model in (before, after):  # the first token must not see the last
            torch.testing.assert_close(model(ids).logits[:, 0], model(changed).logits[:, 0], atol=0, rtol=0)
    assert masked.config.is_causal is False and config.is_causal is True and config.use_cache is True


# ----------------------------------------------------------------------------------------------- loss


def test_loss_is_the_shifted_next_token_cross_entropy_and_accumulates_exactly():
    model = make_model()
    ids = random_ids(4, 10)
    labels = ids.clone()
    labels[:2, :4] = -100  # uneven numbers of target tokens across micro-batches
    with torch.no_grad():
        full = model(ids, labels=labels)
        expected = F.cross_entropy(full.logits[:, :-1].reshape(-1, 300), labels[:, 1:].reshape(-1), ignore_index=-100)
        torch.testing.assert_close(full.loss, expected)
        # Gradient accumulation: each micro-batch divides by the whole batch's target count, so the sum is exact.
        num_items = (labels[:, 1:] != -100).sum()
        halves = [
            model(ids[s], labels=labels[s], num_items_in_batch=num_items).loss for s in (slice(0, 2), slice(2, 4))
        ]
    torch.testing.assert_close(sum(halves), full.loss)


def test_shift_labels_and_logits_to_keep():
    model = make_model()
    ids = random_ids()
    shift_labels = F.pad(ids[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        assert torch.allclose(model(ids, labels=ids).loss, model(ids, shift_labels=shift_labels).loss)
        full, last = model(ids).logits, model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, 300)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def training_loss_and_grads(model, ids, **loss_kwargs):
    model.zero_grad(set_to_none=True)
    output = model(ids, **loss_kwargs)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("label_kind", ["labels", "shift_labels", "num_items_in_batch"])
def test_chunked_training_loss_equals_the_plain_loss_and_gradients(monkeypatch, label_kind):
    import hf_simplegpt.modeling_simplegpt as modeling

    monkeypatch.setattr(modeling, "LOSS_CHUNK_ELEMENTS", 300 * 7)  # 7 rows per chunk: 24 tokens in 4 uneven chunks
    model = make_model(tie_word_embeddings=True).train()
    ids = random_ids(2, 12)
    labels = ids.clone()
    labels[0, :5] = -100  # a prompt without loss
    kwargs = {"labels": labels}
    if label_kind == "shift_labels":
        kwargs = {"shift_labels": F.pad(labels[:, 1:], (0, 1), value=-100)}
    elif label_kind == "num_items_in_batch":
        kwargs["num_items_in_batch"] = torch.tensor(50)  # the target count of a larger accumulated batch
    chunked, chunked_grads = training_loss_and_grads(model, ids, **kwargs)
    plain, plain_grads = training_loss_and_grads(model, ids, skip_logits=False, **kwargs)
    assert chunked.logits is None and plain.logits.shape == (2, 12, 300)
    divisor = 50 if label_kind == "num_items_in_batch" else (labels[:, 1:] != -100).sum()
    expected = F.cross_entropy(plain.logits[:, :-1].reshape(-1, 300), labels[:, 1:].reshape(-1), reduction="sum")
    torch.testing.assert_close(plain.loss, expected / divisor)
    torch.testing.assert_close(chunked.loss, plain.loss)
    assert plain_grads.keys() == chunked_grads.keys() and "model.embed_tokens.weight" in plain_grads
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name  # every parameter, the tied embedding included, gets a real gradient
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_chunked_loss_accumulates_exactly_and_scales_with_the_outer_gradient():
    model = make_model().train()
    ids = random_ids(4, 10)
    labels = ids.clone()
    labels[:2, :4] = -100
    num_items = (labels[:, 1:] != -100).sum()
    _, full_grads = training_loss_and_grads(model, ids, labels=labels)
    model.zero_grad(set_to_none=True)
    for half in (slice(0, 2), slice(2, 4)):
        # Scaling by 3 exercises the backward's multiplication by the incoming gradient.
        (3 * model(ids[half], labels=labels[half], num_items_in_batch=num_items).loss).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 3 * full_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_chunked_loss_under_bfloat16_autocast_is_close_to_the_plain_loss():
    model = make_model(tie_word_embeddings=True).train()
    ids = random_ids(2, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked, chunked_grads = training_loss_and_grads(model, ids, labels=ids)
        plain, plain_grads = training_loss_and_grads(model, ids, labels=ids, skip_logits=False)
    assert chunked.loss.dtype == torch.float32
    torch.testing.assert_close(chunked.loss, plain.loss, atol=2e-2, rtol=0)
    for name, grad in plain_grads.items():
        assert chunked_grads[name].dtype == torch.float32
        torch.testing.assert_close(chunked_grads[name], grad, atol=2e-3, rtol=5e-2, msg=name)


def test_logits_are_skipped_only_in_training_with_labels():
    model = make_model()
    ids = random_ids()
    with torch.no_grad():
        evaluated = model(ids, labels=ids)  # evaluation (Trainer.prediction_step) keeps its logits
        trained = model.train()(ids, labels=ids)
        assert model(ids).logits.shape == (2, 12, 300)  # no labels: logits as always
    assert evaluated.logits.shape == (2, 12, 300) and trained.logits is None
    torch.testing.assert_close(trained.loss, evaluated.loss)
    with pytest.raises(ValueError, match="skip_logits=True .* needs `labels`"):
        model(ids, skip_logits=True)


# ----------------------------------------------------------------------------------------------- caching & generation


@HEAD_SHAPES
@pytest.mark.parametrize("cache_class", [DynamicCache, StaticCache])
def test_incremental_decoding_with_a_cache_equals_the_full_forward(cache_class, head_shape):
    model = make_model(**head_shape)
    ids = random_ids(2, 10)
    with torch.no_grad():
        full = model(ids).logits
        if cache_class is StaticCache:
            cache = StaticCache(config=model.config, max_cache_len=16)
        else:
            cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :6], cache=cache, use_cache=True).logits]
        for t in range(6, 10):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True, position_ids=torch.tensor([[t], [t]]))
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=1e-4)


def greedy_by_hand(model, ids, new_tokens):
    for _ in range(new_tokens):
        with torch.no_grad():
            next_id = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], 1)
    return ids


@HEAD_SHAPES
@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_generate_equals_a_hand_written_argmax_loop(cache_implementation, head_shape):
    model = make_model(**head_shape)
    prompt = random_ids(2, 5)
    generated = model.generate(
        prompt,
        max_new_tokens=8,
        do_sample=False,
        cache_implementation=cache_implementation,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert torch.equal(generated, greedy_by_hand(model, prompt, 8))


def test_left_padded_batch_generates_what_each_prompt_generates_alone():
    model = make_model()
    short, long_ = random_ids(1, 3, seed=6), random_ids(1, 7, seed=7)
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long_])
    mask = torch.tensor([[0] * 4 + [1] * 3, [1] * 7])
    out = model.generate(
        batch, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    assert torch.equal(out[0, 4:], greedy_by_hand(model, short, 6)[0])
    assert torch.equal(out[1], greedy_by_hand(model, long_, 6)[0])


@pytest.mark.filterwarnings("ignore:The `paged|` prefix is no longer needed")
@pytest.mark.parametrize("attn_implementation", ["sdpa", "paged|sdpa", "paged|eager"])
def test_continuous_batching_generates_what_greedy_generate_generates(attn_implementation):
    """`generate_batch` (paged cache, prompts of mixed lengths packed in one row) equals per-prompt greedy generate."""
    model = make_model()
    prompts = [random_ids(1, length, seed=length)[0].tolist() for length in (3, 9, 5)]
    expected = [
        model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False)[0, len(p) :].tolist() for p in prompts
    ]
    model.set_attn_implementation(attn_implementation)
    outputs = model.generate_batch(
        prompts,
        generation_config=GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0),
        continuous_batching_config=ContinuousBatchingConfig(num_blocks=16, max_batch_tokens=64),
        warmup=False,  # warm-up pre-captures CUDA graphs; nothing to capture on a CPU
    )
    generated = {tuple(out.prompt_ids): out.generated_tokens for out in outputs.values()}
    assert [generated[tuple(p)] for p in prompts] == expected  # a failed batch yields [] for every prompt
    assert all(len(tokens) == 6 for tokens in expected)


@pytest.mark.parametrize("model_class", [SimpleGPTModel, SimpleGPTForCausalLM, SimpleGPTForSequenceClassification])
def test_the_pre_v5_cache_name_past_key_values_still_works_with_a_warning(model_class):
    """Like transformers' `test_bc_cache_name_forward`: `past_key_values=` must not vanish into **kwargs."""
    torch.manual_seed(0)
    model = model_class(SimpleGPTConfig(**tiny_config_kwargs(num_labels=2))).eval()
    ids = random_ids(2, 10)
    outputs = {}
    with torch.no_grad():
        full = model(ids)[0]
        for name in ("cache", "past_key_values"):
            cache = DynamicCache(config=model.config)
            model(ids[:, :7], cache=cache, use_cache=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                outputs[name] = model(ids[:, 7:], **{name: cache}, use_cache=True)[0]
            deprecations = [w for w in caught if "past_key_values` is deprecated" in str(w.message)]
            assert len(deprecations) == (name == "past_key_values") and cache.get_seq_length() == 10
    torch.testing.assert_close(outputs["past_key_values"], outputs["cache"], atol=0, rtol=0)
    # The continuation read the cached prefix: it equals the tail of one full forward.
    if model_class is SimpleGPTForSequenceClassification:
        torch.testing.assert_close(outputs["cache"], full, atol=ATOL, rtol=1e-4)
    else:
        torch.testing.assert_close(outputs["cache"], full[:, 7:], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("model_class", [SimpleGPTForCausalLM, SimpleGPTForMaskedLM])
def test_tied_weights_are_sharded_together(monkeypatch, model_class):
    """Like transformers' common test: a tied head and embedding must be split on the same dimension."""
    from transformers.distributed import tensor_parallel
    from transformers.distributed.parallel_utils import ALL_PARALLEL_STYLES, _get_parameter_plan

    # Record the placement each style gives a parameter instead of building a device mesh.
    placements = []
    monkeypatch.setattr(
        tensor_parallel,
        "distribute_tensor",
        lambda tensor, mesh, placement, **_: placements.append(placement) or tensor,
    )
    model = model_class(SimpleGPTConfig(**tiny_config_kwargs(tie_word_embeddings=True)))
    assert model.all_tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    for target, source in model.all_tied_weights_keys.items():
        for name in (target, source):
            style = _get_parameter_plan(name, model.tp_plan)
            assert style is not None, f"{name} is missing from the tensor-parallel plan {model.tp_plan}"
            module_name, _, param_name = name.rpartition(".")
            ALL_PARALLEL_STYLES[style].shard_param(model.get_submodule(module_name), param_name, mesh=None)
        assert placements[-1] == placements[-2] == [tensor_parallel.Shard(0)]  # both split along the vocabulary


@pytest.mark.parametrize("model_class", [SimpleGPTForCausalLM, SimpleGPTForMaskedLM])
def test_the_lm_head_is_a_pipeline_stage_and_kept_whole_under_fsdp(model_class):
    model = model_class(SimpleGPTConfig(**tiny_config_kwargs()))
    assert model.pp_plan["lm_head"] == (["hidden_states"], ["logits"])  # the last stage: hidden states -> logits
    assert model.fsdp_plan == {
        "lm_head": "keep_full_weight",
        "model.embed_tokens": "free_full_weight",
        "model.layers.*": "free_full_weight",
        "model.norm": "keep_full_weight",
    }


def test_generate_from_inputs_embeds_equals_generate_from_ids():
    model = make_model()
    prompt = random_ids(2, 5)
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(prompt)
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(prompt), **kwargs)
    assert torch.equal(from_embeds, model.generate(prompt, **kwargs)[:, 5:])  # only new tokens come back


def test_text_generation_pipeline(tmp_path, tiny_tokenizer):
    model = make_model()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    text = generator("The quick brown", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    prompt_ids = tiny_tokenizer("The quick brown", return_tensors="pt").input_ids
    expected = tiny_tokenizer.decode(greedy_by_hand(model, prompt_ids, 5)[0])
    assert text == expected and text.startswith("The quick brown")


# ----------------------------------------------------------------------------------------------- kernels & training


def test_attention_implementations_agree():
    ids = random_ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    outputs = {}
    for implementation in ["eager", "sdpa", "flex_attention"]:
        model = make_model()
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(ids, attention_mask=mask).logits
    real = mask.bool()  # padded positions attend to nothing; their outputs are arbitrary in every kernel
    torch.testing.assert_close(outputs["sdpa"][real], outputs["eager"][real], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(outputs["flex_attention"][real], outputs["eager"][real], atol=ATOL, rtol=1e-4)


def test_unknown_attention_implementation_is_rejected():
    with pytest.raises(ValueError, match="flash_attention_9"):
        AutoModelForCausalLM.from_config(
            SimpleGPTConfig(**tiny_config_kwargs()), attn_implementation="flash_attention_9"
        )


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = random_ids()
    grads = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5, msg=name)


def test_dropout_is_active_in_training_only():
    model = make_model(dropout=0.1)
    ids = random_ids()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, model(ids).logits)
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)


@HEAD_SHAPES
def test_torch_compile_fullgraph_forward_matches_eager(head_shape):
    model = make_model(**head_shape)
    ids = random_ids()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=ATOL, rtol=1e-4)


def test_torch_compile_fullgraph_training_step_matches_eager():
    """The training forward (labels: the chunked loss) is one graph too, and its gradients are eager's."""
    model = make_model(tie_word_embeddings=True).train()
    ids = random_ids(2, 12)
    eager, eager_grads = training_loss_and_grads(model, ids, labels=ids)
    compiled, compiled_grads = training_loss_and_grads(
        torch.compile(model, fullgraph=True, backend="aot_eager"), ids, labels=ids
    )
    torch.testing.assert_close(compiled.loss, eager.loss, atol=1e-6, rtol=1e-6)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[f"_orig_mod.{name}"], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_generate_with_a_static_cache_and_compile_config_compiles_the_decode_step():
    model = make_model()
    prompt = random_ids(2, 5)
    compile_config = CompileConfig(fullgraph=True, backend="aot_eager")  # dynamo's full graph, without codegen time
    compile_config._compile_all_devices = True  # generate compiles on accelerators only unless told (class default)
    generated = model.generate(
        prompt,
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        cache_implementation="static",
        compile_config=compile_config,
    )
    assert hasattr(model, "_compiled_call")  # the decode steps ran through torch.compile(fullgraph=True)
    assert torch.equal(generated, greedy_by_hand(model, prompt, 8))


def test_a_static_cache_decode_step_compiles_as_one_graph():
    model = make_model()
    ids = random_ids(2, 10)
    cache = StaticCache(config=model.config, max_cache_len=16)
    step = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        full = model(ids).logits
        steps = [model(ids[:, :6], cache=cache, use_cache=True).logits]
        steps += [step(ids[:, t : t + 1], cache=cache, use_cache=True).logits for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=ATOL, rtol=1e-4)


def test_torch_export_without_a_cache_matches_eager_exactly():
    model = make_model()
    ids = random_ids(2, 12)
    seq = torch.export.Dim("seq", min=2, max=64)
    program = torch.export.export(model, args=(ids,), kwargs={"use_cache": False}, dynamic_shapes=({1: seq}, None))
    with torch.no_grad():
        for length in (12, 5, 30):
            x = random_ids(2, length, seed=length)
            torch.testing.assert_close(program.module()(x, use_cache=False).logits, model(x).logits, atol=0, rtol=0)


def test_executorch_static_cache_export_generates_what_generate_generates():
    """transformers' ExecuTorch recipe (static cache, one token per call at its cache position) exports the model."""
    model = make_model()
    prompt = random_ids(1, 5)
    expected = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    model.generation_config.cache_implementation = "static"
    exportable = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=24)
    step = exportable.export(input_ids=torch.tensor([[1]]), cache_position=torch.tensor([0])).module()
    # Driven like the ExecuTorch runner. (transformers 5.24's TorchExportableModuleWithStaticCache.generate feeds the
    # first generated token one position too far, which learned positions make visible, so it is not used here.)
    tokens = prompt[0].tolist()
    for position in range(len(tokens) + 7):
        logits = step(input_ids=torch.tensor([[tokens[position]]]), cache_position=torch.tensor([position]))
        if position >= prompt.shape[1] - 1:
            tokens.append(int(logits[0, -1].argmax()))
    assert tokens == expected[0].tolist()


def test_bfloat16_forward_is_close_to_float32():
    model = make_model()
    ids = random_ids()
    with torch.no_grad():
        reference = model(ids).logits
        low = model.to(torch.bfloat16)(ids).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_hidden_states_and_attentions_are_returned_on_request():
    model = make_model()
    model.set_attn_implementation("eager")
    out = model(random_ids(), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 12, 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 12, 12)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 12))
    assert out.attentions[0][0, 0].triu(1).abs().max() == 0  # no weight on the future


# ----------------------------------------------------------------------------------------------- serving engines


def test_the_transformers_backend_contract_of_vllm_and_sglang(request):
    """Used as vLLM's and SGLang's Transformers backend use it: built on the meta device from the config, weights
    loaded afterwards, attention through a function registered under a new name that receives `layer_idx` (via the
    module) and the engine's extra kwargs and no causal mask, one packed row, `use_cache=False`, explicit positions."""
    config = SimpleGPTConfig(**tiny_config_kwargs())
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    assert type(model) is SimpleGPTModel and all(p.is_meta for p in model.parameters())
    assert model._supports_attention_backend and list(model.pp_plan) == ["embed_tokens", "layers", "norm"]
    assert (
        model.tp_plan["layers.*.self_attn.q_proj"] == "colwise" and model.tp_plan["embed_tokens"] == "embedding_rowwise"
    )
    attention_modules = [m for m in model.modules() if isinstance(m, SimpleGPTAttention)]
    assert [(m.layer_idx, m.is_causal) for m in attention_modules] == [(0, True), (1, True)]
    torch.manual_seed(0)
    reference = SimpleGPTModel(config).eval()
    model = model.to_empty(device="cpu").eval()
    model.load_state_dict(reference.state_dict())

    calls, engine_state = [], object()  # vLLM passes its attention layers as `attention_instances`

    def engine_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((module.layer_idx, attention_mask, kwargs.get("attention_instances")))
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )  # causal via module.is_causal

    AttentionInterface.register("engine_attention", engine_attention)
    request.addfinalizer(lambda: AttentionInterface._global_mapping.pop("engine_attention"))
    model.set_attn_implementation("engine_attention")
    ids, positions = random_ids(1, 9), torch.arange(9).unsqueeze(0)
    with torch.no_grad():
        out = model(
            input_ids=ids, position_ids=positions, use_cache=False, attention_instances=engine_state, return_dict=False
        )
        embeds_out = model(inputs_embeds=model.get_input_embeddings()(ids), position_ids=positions, use_cache=False)
        expected = reference(ids).last_hidden_state
    assert calls[:2] == [(0, None, engine_state), (1, None, engine_state)]
    torch.testing.assert_close(out[0], expected, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(embeds_out.last_hidden_state, expected, atol=ATOL, rtol=1e-4)


def test_the_pipeline_plan_stages_compose_to_the_full_forward():
    model = make_model(norm_position="pre").model
    ids, positions = random_ids(), torch.arange(12).unsqueeze(0)
    with torch.no_grad():
        full = model(ids).last_hidden_state
        # embed_tokens -> layers -> norm, as the plan names them; the positions are an input of every stage.
        hidden = model.embed_tokens(ids)
        position_embeddings = model.embed_positions(positions)
        mask = create_causal_mask(model.config, hidden, None, None, positions)
        for layer in model.layers:
            hidden = layer(hidden, mask, None, position_embeddings=position_embeddings)
        torch.testing.assert_close(model.norm(hidden), full, atol=0, rtol=0)


def pipeline_stage(model: SimpleGPTModel, stage: int, num_stages: int) -> SimpleGPTModel:
    """The modules of `model` that pipeline stage `stage` runs, the others replaced by identities, by the rule
    vLLM's Transformers backend applies to `pp_plan` (transformers' own split of embed_tokens/layers/norm is the
    same): modules before the layers stay on the first stage, and also on the last one when the head is tied."""
    stage_model = copy.deepcopy(model)
    names = list(stage_model.pp_plan)
    layers_at = names.index("layers")
    first, last = stage == 0, stage == num_stages - 1
    for name in names[:layers_at]:
        if not (first or (last and model.config.tie_word_embeddings)):
            setattr(stage_model, name, PipelineIdentityLayer())
    per_stage = len(stage_model.layers) // num_stages
    for i in range(len(stage_model.layers)):
        if not stage * per_stage <= i < (stage + 1) * per_stage:
            stage_model.layers[i] = PipelineIdentityLayer()
    for name in names[layers_at + 1 :]:
        if not last:
            setattr(stage_model, name, PipelineIdentityLayer())
    return stage_model


@pytest.mark.parametrize("tie_word_embeddings", [False, True])
def test_pipeline_stages_add_the_positions_exactly_once(tie_word_embeddings):
    """Each stage after the first receives hidden states as `inputs_embeds`: positions must not be added again."""
    model = make_model(num_hidden_layers=4, tie_word_embeddings=tie_word_embeddings).model
    ids, positions = random_ids(1, 10), torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        hidden = pipeline_stage(model, 0, 2)(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
        staged = pipeline_stage(model, 1, 2)(inputs_embeds=hidden, position_ids=positions, use_cache=False)
        torch.testing.assert_close(staged.last_hidden_state, model(ids).last_hidden_state, atol=ATOL, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- weights & heads


def test_tied_embeddings_share_storage_and_survive_resizing():
    model = make_model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.resize_token_embeddings(320)
    assert model.config.vocab_size == 320 and model.lm_head.weight.shape == (320, 32)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model(torch.tensor([[319]])).logits.shape == (1, 1, 320)
    untied = make_model()
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()


def test_residual_projections_get_gpt2_scaled_init():
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(
        SimpleGPTConfig(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, vocab_size=1000)
    )
    layer = model.model.layers[0]
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.001
    assert abs(layer.self_attn.o_proj.weight.std().item() - 0.02 / 4) < 0.0005  # 0.02 / sqrt(2 * 8)
    assert abs(layer.mlp.down_proj.weight.std().item() - 0.02 / 4) < 0.0005


def test_module_names_follow_transformers_conventions():
    names = {name.rsplit(".", 1)[-1] for name, m in make_model().named_modules() if isinstance(m, torch.nn.Linear)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"}
    assert SimpleGPTForCausalLM._no_split_modules == ["SimpleGPTBlock"]


def test_sequence_classification_scores_the_last_real_token_with_either_padding():
    torch.manual_seed(0)
    model = SimpleGPTForSequenceClassification(SimpleGPTConfig(**tiny_config_kwargs(num_labels=1))).eval()
    ids = random_ids(1, 6)
    pad = torch.zeros(1, 3, dtype=torch.long)
    with torch.no_grad():
        alone = model(ids).logits
        right = model(torch.cat([ids, pad], 1), attention_mask=torch.tensor([[1] * 6 + [0] * 3])).logits
        left = model(torch.cat([pad, ids], 1), attention_mask=torch.tensor([[0] * 3 + [1] * 6])).logits
        by_pad_id = model(torch.cat([ids, pad], 1)).logits  # no mask: the pad token id finds the end
    assert alone.shape == (1, 1)
    for other in (right, left, by_pad_id):
        torch.testing.assert_close(other, alone, atol=ATOL, rtol=1e-4)


def test_sequence_classification_without_pad_token_or_mask_rejects_batches():
    model = SimpleGPTForSequenceClassification(SimpleGPTConfig(**tiny_config_kwargs(pad_token_id=None)))
    with pytest.raises(ValueError, match="pad_token_id"):
        model(random_ids(2, 5))


# ----------------------------------------------------------------------------------------------- save & load


@pytest.mark.parametrize(
    "model_class, auto_class",
    [
        (SimpleGPTModel, AutoModel),
        (SimpleGPTForCausalLM, AutoModelForCausalLM),
        (SimpleGPTForMaskedLM, AutoModelForMaskedLM),
        (SimpleGPTForSequenceClassification, AutoModelForSequenceClassification),
    ],
)
@HEAD_SHAPES
def test_save_and_load_through_the_auto_classes(tmp_path, model_class, auto_class, head_shape):
    torch.manual_seed(0)
    model = model_class(SimpleGPTConfig(**tiny_config_kwargs(num_labels=3, **head_shape))).eval()
    model.save_pretrained(tmp_path)
    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    ids = random_ids()
    with torch.no_grad():
        first = model(ids)[0]
        torch.testing.assert_close(loaded(ids)[0], first, atol=0, rtol=0)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_simplegpt.SimpleGPTForCausalLM"
    assert (tmp_path / "modeling_simplegpt.py").exists() and (tmp_path / "configuration_simplegpt.py").exists()


LAZY_REGISTRATION_SCRIPT = """
import json, sys, tempfile
if sys.argv[1] == "package":  # light: nothing of torch or transformers until they are used
    import hf_simplegpt
    assert not {"torch", "transformers"} & set(sys.modules), "import hf_simplegpt loaded torch or transformers"
else:  # the module itself, as the jobs import it
    from hf_simplegpt.modeling_simplegpt import SimpleGPTForCausalLM
from transformers import AutoConfig, AutoModelForCausalLM
config = AutoConfig.for_model("simplegpt", vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              max_position_embeddings=8)
model = AutoModelForCausalLM.from_config(config)
folder = tempfile.mkdtemp()
model.save_pretrained(folder)
loaded = AutoModelForCausalLM.from_pretrained(folder)
auto_map = json.load(open(folder + "/config.json"))["auto_map"]
print(json.dumps([type(model).__name__, type(loaded).__name__, auto_map["AutoModelForCausalLM"]]))
"""


@pytest.mark.parametrize("first_import", ["package", "module"])
def test_import_registers_with_the_auto_classes_when_transformers_loads_them(first_import):
    """`import hf_simplegpt` loads neither torch nor transformers (the CLI's help is instant), yet transformers' Auto
    classes, loaded after it, know SimpleGPT, and the model saves its auto_map: the registration follows them."""
    done = subprocess.run(
        [sys.executable, "-c", LAZY_REGISTRATION_SCRIPT, first_import], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "SimpleGPTForCausalLM",
        "SimpleGPTForCausalLM",
        "modeling_simplegpt.SimpleGPTForCausalLM",
    ]


REMOTE_CODE_SCRIPT = """
import sys, torch
sys.modules["hf_simplegpt"] = None  # make `import hf_simplegpt` fail, as on a machine without it
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "hf_simplegpt" not in type(model).__module__, type(model).__module__
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[3])
print(type(model).__name__)
"""


def test_a_process_without_hf_simplegpt_loads_the_folder_as_remote_code(tmp_path):
    # heads x head_dim != hidden_size, the less common shape; tests/test_hub.py loads a square one the same way.
    model = make_model(tie_word_embeddings=True, head_dim=12)
    model.save_pretrained(tmp_path / "model")
    ids = random_ids()
    torch.save(ids, tmp_path / "ids.pt")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            REMOTE_CODE_SCRIPT,
            str(tmp_path / "model"),
            str(tmp_path / "ids.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("SimpleGPTForCausalLM")
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "out.pt"), model(ids).logits, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- bad input


def test_sequence_longer_than_the_context_is_rejected():
    model = make_model()
    with pytest.raises(ValueError, match=r"Sequence too long: position 64 .* max_position_embeddings=64"):
        model(random_ids(1, 65))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model.generate(random_ids(1, 60), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)


def test_generate_reads_values_back_for_the_prompt_only_but_direct_calls_are_always_checked(monkeypatch):
    model = make_model()
    checked = []
    check_values = SimpleGPTModel._check_values
    monkeypatch.setattr(
        SimpleGPTModel, "_check_values", lambda self, *args: checked.append(args) or check_values(self, *args)
    )
    prompt = random_ids(2, 5)
    for cache_implementation in ("dynamic", "static"):
        checked.clear()
        generated = model.generate(
            prompt,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            cache_implementation=cache_implementation,
        )
        assert [args[0].shape for args in checked] == [(2, 5)]  # no device read per new token
        assert torch.equal(generated, greedy_by_hand(model, prompt, 8))
    cache = DynamicCache(config=model.config)
    model(prompt, cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="Token id 300 is outside the vocabulary"):
        model(torch.tensor([[300], [5]]), cache=cache, use_cache=True)  # one new token continuing a cache


def test_left_padding_may_outgrow_the_context_while_the_positions_stay_inside_it():
    model = make_model()  # 64 positions
    real = random_ids(1, 50)
    padded = torch.cat([torch.zeros(1, 12, dtype=torch.long), real], 1)  # 62 columns, then 68 after 6 new tokens
    mask = torch.cat([torch.zeros(1, 12, dtype=torch.long), torch.ones(1, 50, dtype=torch.long)], 1)
    kwargs = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    generated = model.generate(padded, attention_mask=mask, **kwargs)  # the last position is 55
    assert torch.equal(generated[:, 12:], model.generate(real, **kwargs))


def test_token_ids_outside_the_vocabulary_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match=r"Token id 300 is outside the vocabulary \[0, 300\).*resize_token_embeddings"):
        model(torch.tensor([[5, 300]]))
    with pytest.raises(ValueError, match="Token id -1"):
        model(torch.tensor([[5, -1]]))


def test_attention_mask_of_the_wrong_shape_is_rejected():
    model = make_model()
    with pytest.raises(
        ValueError, match=r"attention_mask has shape \(2, 5\), expected \(batch_size=2, past \+ current length=12\)"
    ):
        model(random_ids(), attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(random_ids(), attention_mask=torch.ones(3, 12))
