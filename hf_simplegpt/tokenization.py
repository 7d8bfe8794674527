"""Byte-level BPE tokenizer for SimpleGPT, trained in seconds with the `tokenizers` library.

The result is a `PreTrainedTokenizerFast`: `save_pretrained(dir)` then `AutoTokenizer.from_pretrained(dir)` returns it.
Its chat template wraps assistant turns in `{% generation %}` so TRL can train on assistant tokens only.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerFast

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
MASK_TOKEN = "<|mask|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, MASK_TOKEN, *ROLE_TOKENS)
BYTE_ALPHABET_SIZE = 256  # byte-level BPE starts from all 256 bytes, so any text is encodable

# Each turn: a role token, newline, content, end-of-text. Only the assistant's content and its end-of-text are
# inside {% generation %}, which is what TRL's `assistant_only_loss` trains on.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown chat role ' + message['role'] + ': use system, user or assistant.') }}"
    "{%- endif %}"
    "{{- '<|' + message['role'] + '|>\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + eos_token }}{% endgeneration %}"
    "{%- else %}"
    "{{- message['content'] + eos_token }}"
    "{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 10000,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`.

    Args:
        texts: the training text, any iterable of strings (a list, a generator, a `datasets` column).
        vocab_size: final vocabulary size, special tokens included; the model's `config.vocab_size` should match.
        min_frequency: pairs seen fewer times are not merged.
        model_max_length: the context length the tokenizer reports (the model's `max_position_embeddings`).

    Returns:
        A tokenizer with bos/eos/pad/unk/mask tokens, the chat roles as special tokens, and the chat template.
        It adds no special tokens when encoding (GPT-2 style); data pipelines insert end-of-text between documents.
    """
    smallest = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the byte alphabet ({BYTE_ALPHABET_SIZE}) and the special tokens "
            f"({len(SPECIAL_TOKENS)}: {', '.join(SPECIAL_TOKENS)}) alone need {smallest}. Use vocab_size >= {smallest}."
        )
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.get_vocab_size() <= smallest < vocab_size:
        raise ValueError(
            f"The tokenizer learned no merges: the training text is empty or has no pair of symbols seen "
            f"min_frequency={min_frequency} times. Pass more text (or lower min_frequency)."
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """The token ids a SimpleGPTConfig needs from its tokenizer: bos, eos and pad."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def differing_tokens(tokenizer, other, limit: int = 5) -> list[tuple[str, int]]:
    """Up to `limit` (token, id) pairs that one tokenizer has and the other has not: empty when they map every token
    to the same id. Two tokenizers of the same size trained on different text differ almost everywhere."""
    return sorted(set(tokenizer.get_vocab().items()) ^ set(other.get_vocab().items()))[:limit]


def check_same_vocabulary(
    student_path: str,
    teacher_path: str,
    roles: tuple[str, str] = ("student", "teacher"),
    why: str = "Distillation matches the teacher's next-token distribution token by token",
) -> None:
    """Raise `ValueError` unless the two model folders share a vocabulary: the same `vocab_size` and the same token
    to id mapping. `roles` name the two folders in the message and `why` says what needs it (distillation by default,
    speculative decoding for a draft and its target)."""
    first, second = roles
    student, teacher = AutoConfig.from_pretrained(student_path), AutoConfig.from_pretrained(teacher_path)
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"The {first} ({student_path}) has vocab_size {student.vocab_size} but the {second} ({teacher_path}) has "
            f"{teacher.vocab_size}. {why}, so both must use the same tokenizer: build the {first} with the "
            f"{second}'s tokenizer."
        )
    differing = differing_tokens(*(AutoTokenizer.from_pretrained(path) for path in (student_path, teacher_path)))
    if differing:
        raise ValueError(
            f"The {first} ({student_path}) and {second} ({teacher_path}) tokenizers have the same size but map tokens "
            f"differently (e.g. {differing}). {why}: build the {first} with the {second}'s tokenizer."
        )


def check_tokenizer_files(folder: str, flag: str) -> None:
    """Raise ValueError naming the file when a saved tokenizer in `folder` is damaged (a truncated or garbage
    tokenizer.json, a tokenizer_config.json that is not JSON): `AutoTokenizer.from_pretrained` would otherwise end in
    a bare JSONDecodeError or KeyError naming no file."""
    import json
    import os

    config = os.path.join(folder, "tokenizer_config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{flag} {folder}: {config} is not valid JSON ({error}); the file is truncated or "
                "damaged. Restore it from where the folder came from."
            ) from None
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        try:
            Tokenizer.from_file(path)
        except Exception as error:  # the tokenizers library raises a bare Exception for any unreadable file
            raise ValueError(
                f"{flag} {folder}: {path} is not a readable tokenizer ({error}); the file is truncated "
                "or damaged. Restore it from where the folder came from."
            ) from None
