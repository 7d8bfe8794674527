"""The parts of transformers' serving app and continuous batching that hf_simplegpt/serving subclasses or reaches
into. transformers does not promise them (most are private), so a transformers upgrade that renames or reshapes one
fails here, naming the symbol, rather than somewhere inside a request."""

import dataclasses
import inspect

import pytest

pytest.importorskip("fastapi")

from transformers import ContinuousBatchingConfig  # noqa: E402
from transformers.cli.serving import model_manager, server, utils  # noqa: E402
from transformers.cli.serving.completion import CompletionHandler  # noqa: E402
from transformers.generation.continuous_batching import cache, continuous_api, input_outputs, model_runner  # noqa: E402
from transformers.generation.continuous_batching import requests as cb_requests  # noqa: E402


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# (symbol, what this project needs of it)
METHODS = [
    (model_manager.ModelManager._load_model, ["self", "model_id_and_revision"]),
    (model_manager.ModelManager._load_processor, ["self", "model_id_and_revision", "gguf_file"]),
    (model_manager.ModelManager.load_model_and_processor, ["self", "model_id_and_revision"]),
    (model_manager.ModelManager.load_model_streaming, ["self", "model_id_and_revision"]),
    (model_manager.ModelManager.process_model_name, ["model_id"]),  # a staticmethod
    (utils.GenerateManager.submit, ["self", "fn"]),
    (utils.GenerateManager.async_submit, ["self", "fn"]),
    (utils.CBGenerateManager.init_cb, ["self", "model", "gen_config"]),
    (utils.CBGenerateManager.generate_streaming, ["self", "model", "processor", "inputs", "gen_config", "request_id"]),
    (
        utils.CBGenerateManager.generate_non_streaming,
        ["self", "model", "processor", "inputs", "gen_config", "request_id"],
    ),
    (utils.GenerationState.get_manager, ["self", "model_id", "use_cb"]),
    (utils.GenerationState.use_continuous_batching, ["self", "model", "modality"]),
    (utils.BaseHandler._build_generation_config, ["self", "body", "model_generation_config", "use_cb"]),
    (utils.BaseHandler._validate_request, ["self", "body"]),
    (utils.BaseHandler._resolve_model, ["self", "body"]),
    (
        CompletionHandler._streaming,
        ["self", "request_id", "model", "processor", "model_id", "inputs", "gen_config", "gen_manager", "suffix"],
    ),
    (
        CompletionHandler._non_streaming,
        ["self", "request_id", "model", "processor", "model_id", "inputs", "gen_config", "gen_manager", "suffix"],
    ),
    (
        continuous_api.ContinuousBatchingManager.__init__,
        ["self", "model", "generation_config", "continuous_batching_config"],
    ),
    (continuous_api.ContinuousBatchingManager._create_batch_processor, ["self"]),
    (model_runner.ModelRunner._sample, ["self", "scores", "output_ids"]),
    (cache.PagedAttentionCache.search_prefix_match, ["self", "request_id", "prompt_ids"]),
]


@pytest.mark.parametrize("method, needed", METHODS, ids=[m.__qualname__ for m, _ in METHODS])
def test_the_methods_we_override_or_call_keep_their_parameters(method, needed):
    have = parameters(method)
    assert have[: len(needed)] == needed, (
        f"transformers' {method.__module__}.{method.__qualname__} now takes {have}; hf_simplegpt/serving relies on "
        f"{needed}. Update hf_simplegpt/serving/app.py or sampling.py for this transformers version."
    )


def test_the_attributes_we_read_exist():
    assert hasattr(model_manager, "transformers"), (
        "transformers.cli.serving.model_manager no longer holds `transformers`: register_simplegpt() sets the "
        "SimpleGPT classes there for its getattr(transformers, architectures[0])."
    )
    state = utils.GenerationState(continuous_batching=True)
    for name in ("_cb_manager", "_cb_model_id", "_cb_config", "_generate_managers"):
        assert hasattr(state, name), f"transformers' GenerationState has no `{name}` (read by RoutingGenerationState)"
    cb = utils.CBGenerateManager(cb_config=None)
    for name in ("_cb", "_cb_config"):
        assert hasattr(cb, name), f"transformers' CBGenerateManager has no `{name}` (set by RowSamplingCBManager)"
    assert "force_model" in parameters(model_manager.ModelManager.__init__), "ModelManager(force_model=...) is gone"
    needed = {
        "model_manager",
        "chat_handler",
        "completion_handler",
        "response_handler",
        "transcription_handler",
        "systemone_handler",
        "generation_state",
    }
    assert needed <= set(parameters(server.build_server)), f"build_server no longer takes {needed}"


def test_the_continuous_batching_state_the_sampler_reads_exists():
    """RowSampler reads, at each sampling step: the batch's requests in logits order, whether each has a new token,
    and each request's prompt, reply and token limit (which it lowers to end a request at a stop string)."""
    io_source = inspect.getsource(input_outputs.ContinuousBatchingIOs.prepare_batch_tensors)
    assert "self.requests_in_batch.append(future_state)" in io_source and "has_new_token" in io_source, (
        "ContinuousBatchingIOs.prepare_batch_tensors no longer lists requests_in_batch in logits order"
    )
    state = cb_requests.RequestState(request_id="r", initial_tokens=[1, 2], max_new_tokens=5)
    for name in ("initial_tokens", "generated_tokens", "_new_tokens_limit", "request_id"):
        assert hasattr(state, name), f"transformers' RequestState has no `{name}` (read by RowSampler)"
    assert state._new_tokens_limit == 5, "RequestState._new_tokens_limit no longer holds max_new_tokens"
    future = cb_requests.FutureRequestState(state, has_new_token=True, complete_blocks={}, query_length=1)
    assert future.has_new_token and future.state is state, "FutureRequestState(state, has_new_token, ...) changed"
    fields = {field.name for field in dataclasses.fields(ContinuousBatchingConfig)}
    assert {"use_cuda_graph", "use_async_batching", "page_size", "num_blocks", "max_batch_tokens"} <= fields, (
        f"ContinuousBatchingConfig lost fields hf_simplegpt/serving sets: {fields}"
    )
    processor_source = inspect.getsource(continuous_api.ContinuousBatchProcessor.__init__)
    assert "self.model_runner = ModelRunner(" in processor_source, "ContinuousBatchProcessor.model_runner is gone"
