"""recipes/convert.py (hf-simplegpt convert): a GPT-2 folder in, a SimpleGPT folder with the same logits out."""

import torch
from transformers import AutoModelForCausalLM

from hf_simplegpt import SimpleGPTForCausalLM
from hf_simplegpt.recipes.convert import main
from tests.test_conversion import tiny_gpt2


def test_conversion_cli_writes_a_loadable_folder(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    main(["--gpt2", str(tmp_path / "gpt2"), "--output_dir", str(tmp_path / "simplegpt")])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "simplegpt")
    assert isinstance(loaded, SimpleGPTForCausalLM)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, tiny_gpt2()(ids).logits, atol=1e-5, rtol=0)
