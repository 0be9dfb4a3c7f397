"""Decode speed of a trained toy model."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...toyworld.tasks import load_split
from .model import load_checkpoint


@torch.no_grad()
def decode_speed(model_dir: str | Path, new_tokens: int = 200) -> float:
    """Tokens per second of greedy HF generate at batch 1 (forced to ``new_tokens``)."""
    model, tokenizer = load_checkpoint(model_dir)
    problem = load_split("test", 1)[0]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": problem.question}], add_generation_prompt=True,
                                        return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    return new_tokens / (time.perf_counter() - start)
