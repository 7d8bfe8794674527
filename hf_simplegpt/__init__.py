"""hf_simplegpt: the reference design's GPT as a first-class transformers model.

Importing the package registers SimpleGPT with the Auto classes, and marks the classes so that `save_pretrained`
writes the configuration and modeling code plus an `auto_map` into the folder: a machine without hf_simplegpt then
loads it with `trust_remote_code=True`.

The import itself is light (no torch, no transformers), so that `hf-simplegpt --help` answers at once: the classes
below load on first access, as transformers' own `_LazyModule` does, and the registration happens as soon as
transformers loads its Auto classes (`AutoConfig`, `AutoModelForCausalLM`, ...) or this package loads SimpleGPT's
classes, whichever comes first: `import hf_simplegpt` then `AutoModelForCausalLM.from_pretrained(folder)` works as
before.
"""

import importlib
import importlib.abc
import sys

__all__ = [
    "SimpleGPTConfig",
    "SimpleGPTPreTrainedModel",
    "SimpleGPTModel",
    "SimpleGPTForCausalLM",
    "SimpleGPTForMaskedLM",
    "SimpleGPTForSequenceClassification",
]
CONFIG_AUTO, MODEL_AUTO = "transformers.models.auto.configuration_auto", "transformers.models.auto.modeling_auto"
CONFIG_MODULE, MODEL_MODULE = f"{__name__}.configuration_simplegpt", f"{__name__}.modeling_simplegpt"
LOADING = set()  # the REGISTER_AFTER modules being executed now


def register_config() -> None:
    if CONFIG_MODULE in LOADING:  # transformers loaded its Auto classes for it: registered once it has loaded
        return
    # From its module rather than `transformers`'s lazy attributes: this may run while that module finishes loading.
    AutoConfig = importlib.import_module(CONFIG_AUTO).AutoConfig
    from .configuration_simplegpt import SimpleGPTConfig

    AutoConfig.register(SimpleGPTConfig.model_type, SimpleGPTConfig, exist_ok=True)
    SimpleGPTConfig.register_for_auto_class()


def register_models() -> None:
    if LOADING & {CONFIG_MODULE, MODEL_MODULE}:  # as in register_config
        return
    auto = importlib.import_module(MODEL_AUTO)
    from .configuration_simplegpt import SimpleGPTConfig
    from .modeling_simplegpt import (
        SimpleGPTForCausalLM,
        SimpleGPTForMaskedLM,
        SimpleGPTForSequenceClassification,
        SimpleGPTModel,
    )

    register_config()
    auto_classes = {
        auto.AutoModel: SimpleGPTModel,
        auto.AutoModelForCausalLM: SimpleGPTForCausalLM,
        auto.AutoModelForMaskedLM: SimpleGPTForMaskedLM,
        auto.AutoModelForSequenceClassification: SimpleGPTForSequenceClassification,
    }
    for auto_class, model_class in auto_classes.items():
        auto_class.register(SimpleGPTConfig, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)


# What to register once a module has loaded. transformers imports configuration_auto while transformers.modeling_utils
# is half loaded, so that one registers the configuration only; the models follow with modeling_auto.
REGISTER_AFTER = {CONFIG_AUTO: register_config, CONFIG_MODULE: register_config}
REGISTER_AFTER |= {MODEL_AUTO: register_models, MODEL_MODULE: register_models}


class RegisteringLoader(importlib.abc.Loader):
    """The loader of one of the `REGISTER_AFTER` modules: loads it as usual, then registers."""

    def __init__(self, loader, register):
        self.loader, self.register = loader, register

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        LOADING.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            LOADING.discard(module.__name__)
        self.register()

    def __getattr__(self, name):  # get_source, get_filename, ...: the real loader's
        return getattr(self.loader, name)


class RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds the `REGISTER_AFTER` modules with the other finders and gives them a `RegisteringLoader`."""

    def find_spec(self, name, path, target=None):
        if name not in REGISTER_AFTER:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = RegisteringLoader(spec.loader, REGISTER_AFTER[name])
                return spec
        return None


if not any(isinstance(finder, RegisterOnImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, RegisterOnImport())
if MODEL_AUTO in sys.modules:  # transformers' Auto classes were loaded before this package
    register_models()
elif CONFIG_AUTO in sys.modules:
    register_config()


def __getattr__(name):
    if name == "SimpleGPTConfig":
        register_config()
        return importlib.import_module(CONFIG_MODULE).SimpleGPTConfig
    if name in __all__:
        register_models()
        return getattr(importlib.import_module(MODEL_MODULE), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
