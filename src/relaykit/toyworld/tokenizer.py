"""The toy world's tokenizer: characters plus frequent words and operators, digits one token each."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
USER, ASSISTANT = "<|user|>", "<|assistant|>"
# Markup the models write: single tokens that decoding keeps (not "special"), as Qwen3 keeps
# <think>, so an engine that skips special tokens still shows them.
MARKUP_TOKENS = ["<think>", "</think>", "<call>", "</call>"]
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, USER, ASSISTANT]
# Frequent words of the task templates, one token each (matched as whole words).
WORDS = [
    "The", "answer", "is", "the", "check", "of", "Check", "it", "times", "time", "What",
    "We", "need", "First", "Then", "Next", "So", "Therefore", "Thus", "Hence", "Now",
    "Wait", "Also", "Again", "Alternatively", "product", "sum", "and", "list", "Sorted",
    "largest", "smallest", "Take", "multiply", "by", "Its", "its", "last", "two", "digits",
    "are", "first", "second",
]
# Operators and separators with their spaces, one token each.
PIECES = [" = ", " * ", " + ", " - ", " / ", ", ", ": "]
CHARACTERS = list(string.digits + string.ascii_letters + " .,:;?!*+-/=()'\"\n")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "{{ message['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the word-and-character tokenizer with its special tokens and chat template."""
    tokens = (SPECIAL_TOKENS[:4] + MARKUP_TOKENS + SPECIAL_TOKENS[4:] + WORDS + [" " + word for word in WORDS]
              + PIECES + CHARACTERS)
    vocab = {token: i for i, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    words = "|".join(sorted(WORDS, key=len, reverse=True))
    pieces = "|".join(re.escape(piece) for piece in PIECES)
    pattern = rf"(?: |\b)(?:{words})\b|{pieces}|[\s\S]"
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.add_tokens(MARKUP_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=SPECIAL_TOKENS[4:],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """Save to ``folder`` as tokenizer.json + tokenizer_config.json (chat template inside the config)."""
    tokenizer.save_pretrained(str(folder), save_jinja_files=False)
    config_path = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
