"""hf_simplegpt: the reference design's GPT as a first-class transformers model.

Importing the package registers SimpleGPT with the Auto classes, and marks the classes so that `save_pretrained`
writes the configuration and modeling code plus an `auto_map` into the folder: a machine without hf_simplegpt then
loads it with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from .configuration_simplegpt import SimpleGPTConfig
from .modeling_simplegpt import (
    SimpleGPTForCausalLM,
    SimpleGPTForMaskedLM,
    SimpleGPTForSequenceClassification,
    SimpleGPTModel,
    SimpleGPTPreTrainedModel,
)

AUTO_CLASSES = {
    AutoModel: SimpleGPTModel,
    AutoModelForCausalLM: SimpleGPTForCausalLM,
    AutoModelForMaskedLM: SimpleGPTForMaskedLM,
    AutoModelForSequenceClassification: SimpleGPTForSequenceClassification,
}

AutoConfig.register(SimpleGPTConfig.model_type, SimpleGPTConfig, exist_ok=True)
SimpleGPTConfig.register_for_auto_class()
for auto_class, model_class in AUTO_CLASSES.items():
    auto_class.register(SimpleGPTConfig, model_class, exist_ok=True)
    model_class.register_for_auto_class(auto_class.__name__)

__all__ = [
    "SimpleGPTConfig",
    "SimpleGPTPreTrainedModel",
    "SimpleGPTModel",
    "SimpleGPTForCausalLM",
    "SimpleGPTForMaskedLM",
    "SimpleGPTForSequenceClassification",
]
