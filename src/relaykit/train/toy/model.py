"""A toy model: built fresh from its shape, saved as an ordinary HF checkpoint, loaded back."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from ...toyworld.tokenizer import save_tokenizer
from .config import ToyModelConfig


def build_model(shape: ToyModelConfig, tokenizer) -> LlamaForCausalLM:
    """A fresh Llama model of ``shape`` for the toy tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def save_checkpoint(model: LlamaForCausalLM, tokenizer, folder: Path) -> None:
    """Write an ordinary HF checkpoint folder (safetensors, tokenizer, generation config)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    model.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer(tokenizer, folder)


def load_checkpoint(model_dir: str | Path):
    """(model in float32 and eval mode, tokenizer) of a checkpoint folder."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return model, tokenizer
