"""hf_simplegpt: a small GPT that is a first-class transformers model."""
