"""The jobs, one module each: parse dataclasses (with `--config file.yaml`), load, build the trainer, train, save,
write the card, push. `hf-simplegpt <job>` runs them (through `accelerate launch` for training), and so do the thin
scripts of the repository's recipes/ folder; configs/ and accelerate/ are that folder's YAML files, carried here so
that an installed package has them too.
"""
