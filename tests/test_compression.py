"""hf_simplegpt.compression: activation importance, weight slicing that keeps every kept unit exact, pruned folders,
and pruned models as drafts for speculative decoding."""

import copy

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.compression import (
    PruningPlan,
    collect_importance,
    language_model_loss,
    load_draft,
    prune_model,
    pruned_shape,
    select_units,
)
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer
from tests.conftest import TINY_CORPUS, tiny_config_kwargs
from tests.test_modeling_simplegpt import make_model, random_ids

HEADS, HEAD_DIM, NEURONS = 4, 8, 128  # the tiny config: 4 heads of 8 in a 32-wide model, 4 x 32 MLP neurons


def calibration_blocks(samples=6, length=16):
    return random_ids(samples, length, seed=7)


@torch.no_grad()
def masked_copy(model, plan: PruningPlan):
    """The original model with every unit the plan drops silenced: o_proj reads nothing from a dropped head and
    down_proj nothing from a dropped neuron. Its kept units are untouched, so it computes what they computed."""
    masked = copy.deepcopy(model)
    for layer, heads, neurons in zip(masked.model.layers, plan.heads, plan.neurons):
        kept_channels = [h * HEAD_DIM + d for h in heads for d in range(HEAD_DIM)]
        drop_channels = sorted(set(range(HEADS * HEAD_DIM)) - set(kept_channels))
        layer.self_attn.o_proj.weight[:, drop_channels] = 0
        layer.mlp.down_proj.weight[:, sorted(set(range(NEURONS)) - set(neurons))] = 0
    return masked


def capture_head_outputs(model):
    """Forward hooks that record each layer's concatenated head outputs (the input of o_proj)."""
    outputs, handles = [], []
    for layer in model.model.layers:
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(lambda m, args: outputs.append(args[0])))
    return outputs, handles


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_the_pruned_models_kept_units_compute_exactly_what_they_computed_before(norm_position):
    model = make_model(num_hidden_layers=3, norm_position=norm_position)
    plan = select_units(collect_importance(model, calibration_blocks()), num_heads=2, num_neurons=50)
    pruned = prune_model(model, plan)
    assert (pruned.config.num_attention_heads, pruned.config.head_dim, pruned.config.intermediate_size) == (2, 8, 50)
    assert pruned.config.num_attention_heads * pruned.config.head_dim != pruned.config.hidden_size
    masked = masked_copy(model, plan)
    ids = random_ids(2, 20)
    before, before_handles = capture_head_outputs(masked)
    after, after_handles = capture_head_outputs(pruned)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, masked(ids).logits, atol=1e-6, rtol=0)
        assert model(ids).logits.sub(pruned(ids).logits).abs().max() > 1e-4  # pruning did change the model
    for handle in before_handles + after_handles:
        handle.remove()
    for layer, (full, sliced) in enumerate(zip(before, after)):  # every kept head's output, channel for channel
        kept = [h * HEAD_DIM + d for h in plan.heads[layer] for d in range(HEAD_DIM)]
        torch.testing.assert_close(sliced, full[..., kept], atol=1e-6, rtol=0)


def test_depth_pruning_removes_the_blocks_that_turn_the_residual_stream_least():
    model = make_model(num_hidden_layers=3, norm_position="pre")
    with torch.no_grad():  # block 1 adds nothing to the residual stream: its output is its input
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].self_attn.o_proj.bias.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.bias.zero_()
    importance = collect_importance(model, calibration_blocks())
    assert importance.layers[1] < 1e-6 < min(importance.layers[0], importance.layers[2])
    plan = select_units(importance, num_heads=HEADS, num_neurons=NEURONS, drop_layers=1)
    assert plan.layers == [0, 2]
    pruned = prune_model(model, plan)
    assert pruned.config.num_hidden_layers == 2
    ids = random_ids(2, 20)
    with torch.no_grad():  # dropping an identity block changes nothing
        torch.testing.assert_close(pruned(ids).logits, model(ids).logits, atol=1e-6, rtol=0)


def test_importance_is_the_minitron_activation_norm():
    model = make_model()
    with torch.no_grad():  # head 3 of layer 0 attends to zero values, neuron 5 of layer 1 never fires
        model.model.layers[0].self_attn.v_proj.weight[3 * HEAD_DIM : 4 * HEAD_DIM] = 0
        model.model.layers[0].self_attn.v_proj.bias[3 * HEAD_DIM : 4 * HEAD_DIM] = 0
        model.model.layers[1].mlp.up_proj.weight[5] = 0
        model.model.layers[1].mlp.up_proj.bias[5] = -10  # GELU(-10) is 0 to float32 precision
    blocks = calibration_blocks()
    outputs, handles = capture_head_outputs(model)
    with torch.no_grad():
        model(blocks)
    handles[0].remove(), handles[1].remove()
    importance = collect_importance(model, blocks, batch_size=4)  # batches of 4 + 2 aggregate like one of 6
    # By hand for layer 0: mean |activation| over the sequence, L2 over the samples, L2 over each head's channels.
    per_channel = outputs[0].abs().mean(dim=1).norm(dim=0)
    torch.testing.assert_close(importance.heads[0], per_channel.view(HEADS, HEAD_DIM).norm(dim=-1), rtol=1e-5, atol=0)
    assert importance.heads[0, 3] == 0 and importance.heads[0, :3].min() > 0
    assert importance.neurons[1, 5] < 1e-6 < importance.neurons[1].median()
    plan = select_units(importance, num_heads=3, num_neurons=NEURONS - 1)
    assert plan.heads[0] == [0, 1, 2] and 5 not in plan.neurons[1]


def test_a_pruned_folder_saves_and_reloads_as_an_ordinary_simplegpt(tmp_path):
    model = make_model(tie_word_embeddings=True)
    pruned = prune_model(model, select_units(collect_importance(model, calibration_blocks()), 3, 40))
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert (reloaded.config.num_attention_heads, reloaded.config.head_dim, reloaded.config.hidden_size) == (3, 8, 32)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()  # still tied
    ids = random_ids()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, atol=0, rtol=0)


def test_language_model_loss_is_the_mean_next_token_cross_entropy():
    model, blocks = make_model(), calibration_blocks(5, 12)
    with torch.no_grad():
        logprobs = model(blocks).logits[:, :-1].log_softmax(-1)
    expected = -logprobs.gather(-1, blocks[:, 1:, None]).mean().item()
    assert language_model_loss(model, blocks, batch_size=2) == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------ speculative decoding


def test_a_pruned_draft_gives_exactly_the_targets_greedy_tokens():
    target = make_model(num_hidden_layers=3)
    draft = prune_model(target, select_units(collect_importance(target, calibration_blocks()), 2, 64, drop_layers=1))
    proposals = []
    draft.register_forward_hook(lambda module, args, output: proposals.append(1))
    for seed in range(3):
        prompt = random_ids(1, 4 + seed, seed=seed)
        plain = target.generate(prompt, do_sample=False, max_new_tokens=24, pad_token_id=0)
        assisted = target.generate(prompt, do_sample=False, max_new_tokens=24, pad_token_id=0, assistant_model=draft)
        assert plain.shape[1] == prompt.shape[1] + 24
        assert assisted.tolist() == plain.tolist()
    assert len(proposals) >= 6  # the draft did propose tokens


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A target folder, and drafts whose tokenizer has another size, or the same size and another mapping."""
    root = tmp_path_factory.mktemp("drafts")
    tokenizer = train_tokenizer(TINY_CORPUS, vocab_size=300, model_max_length=64)
    other_size = train_tokenizer(TINY_CORPUS, vocab_size=280, model_max_length=64)
    reversed_corpus = [text[::-1] for text in TINY_CORPUS]  # same special tokens and size, other merges
    other_mapping = train_tokenizer(reversed_corpus, vocab_size=300, model_max_length=64)
    assert len(other_mapping) == len(tokenizer) and other_mapping.get_vocab() != tokenizer.get_vocab()
    for name, tok in (
        ("target", tokenizer),
        ("draft", tokenizer),
        ("other_size", other_size),
        ("other_mapping", other_mapping),
    ):
        torch.manual_seed(0)
        config = SimpleGPTConfig(**tiny_config_kwargs(vocab_size=len(tok), **special_token_ids(tok)))
        SimpleGPTForCausalLM(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def test_load_draft_loads_a_draft_with_the_targets_tokenizer(folders):
    draft = load_draft(str(folders / "draft"), target=str(folders / "target"))
    assert isinstance(draft, SimpleGPTForCausalLM) and not draft.training


@pytest.mark.parametrize(
    "name, message",
    [
        ("other_size", r"draft \(.*other_size\) has vocab_size 280 but the target .* has 300\. Speculative decoding"),
        ("other_mapping", r"draft .* and target .* tokenizers have the same size but map tokens differently"),
    ],
)
def test_a_draft_with_another_vocabulary_is_refused_before_its_weights_load(folders, name, message, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the draft's weights were loaded before its vocabulary was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(ValueError, match=message):
        load_draft(str(folders / name), target=str(folders / "target"))


# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "ratios, drop_layers, message",
    [
        ((0.0, 0.5), 0, r"--attention_keep_ratio \(or --keep_ratio\) must be in \(0, 1\], got 0\.0"),
        ((0.5, 1.5), 0, r"--mlp_keep_ratio \(or --keep_ratio\) must be in \(0, 1\], got 1\.5"),
        ((0.1, 0.5), 0, r"Keeping 0\.1 of 4 attention heads per layer keeps 0; .* at least 0\.125"),
        ((0.5, 0.003), 0, r"Keeping 0\.003 of 128 MLP neurons per layer keeps 0; .*--mlp_keep_ratio"),
        ((0.5, 0.5), 2, r"--drop_layers 2: the model has 2 layers and at least one must stay; pass a number in 0\.\.1"),
    ],
)
def test_impossible_pruning_is_refused_with_the_flag_to_change(ratios, drop_layers, message):
    with pytest.raises(ValueError, match=message):
        pruned_shape(SimpleGPTConfig(**tiny_config_kwargs()), *ratios, drop_layers)


def test_pruned_shape_rounds_to_the_nearest_unit():
    shape = pruned_shape(SimpleGPTConfig(**tiny_config_kwargs()), 0.375, 0.5, 1)
    assert shape == {"num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1}  # 1.5 heads -> 2


def test_a_plan_with_different_widths_per_layer_is_refused():
    plan = PruningPlan(layers=[0, 1], heads=[[0, 1], [0]], neurons=[[0], [0]])
    with pytest.raises(ValueError, match="same number of heads and of neurons in every kept layer"):
        prune_model(make_model(), plan)
