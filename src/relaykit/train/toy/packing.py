"""Training sequences: a problem encoded with its question masked, problems packed into fixed-length rows."""

from __future__ import annotations

from typing import Iterator

import torch

from ...toyworld.tasks import Problem


def encode(tokenizer, problem: Problem) -> tuple[list[int], list[int]]:
    """Token ids of prompt + solution + eos, and labels with the prompt masked (-100)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + target, [-100] * len(prompt_ids) + target


class Packer:
    """Packs encoded problems into fixed-length rows (padding at the end of a row); a row may be
    led by one problem of `long` (the long variant)."""

    def __init__(self, tokenizer, short: Iterator[Problem], long: Iterator[Problem] | None = None):
        self.tokenizer = tokenizer
        self.short = short
        self.long = long
        self.pending: tuple[list[int], list[int]] | None = None

    def _next_short(self) -> tuple[list[int], list[int]]:
        item, self.pending = self.pending or encode(self.tokenizer, next(self.short)), None
        return item

    def row(self, length: int, lead_long: bool) -> tuple[list[int], list[int]]:
        ids, labels = encode(self.tokenizer, next(self.long)) if lead_long else ([], [])
        while True:
            item = self._next_short()
            if len(ids) + len(item[0]) > length:
                self.pending = item
                break
            ids, labels = ids + item[0], labels + item[1]
        pad = length - len(ids)
        return ids[:length] + [self.tokenizer.pad_token_id] * pad, labels[:length] + [-100] * pad

    def batch(self, rows: int, length: int, lead_long: bool) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.row(length, lead_long) for _ in range(rows)]
        return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
