"""Turning user text into prompt token ids."""

from __future__ import annotations


def encode_prompt(tokenizer, text: str, raw: bool = False, system: str | None = None) -> list[int]:
    """Token ids for `text`: through the tokenizer's chat template when it has one, unless `raw`."""
    if not raw and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(templated, add_special_tokens=False)["input_ids"]
    ids = tokenizer(text)["input_ids"]
    return ids or [tokenizer.bos_token_id or tokenizer.eos_token_id]
