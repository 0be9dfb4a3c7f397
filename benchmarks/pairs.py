"""Model pairs for benchmarks: the shipped toy pair, named checkpoints, or a pair built from configs."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from relaykit.api import default_model
from relaykit.models.loading import Model, load_model


def build_pair(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A small Llama (2 layers) and a large one: the small one's layers plus 14 layers whose
    residual contributions are damped, so that the pair agrees often (like a distilled draft)
    while the large one costs about 6x more per token. Narrow (128 wide), so that decoding is
    bound by per-layer latency as it is for real models on accelerators, not by CPU FLOPs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from relaykit.toyworld.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    common = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    small = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **common))
    large = LlamaForCausalLM(LlamaConfig(num_hidden_layers=16, **common))
    with torch.no_grad():
        small.lm_head.weight.mul_(20.0)
        large.load_state_dict(small.state_dict(), strict=False)
        for layer in large.model.layers[2:]:
            layer.self_attn.o_proj.weight.mul_(0.05)
            layer.mlp.down_proj.weight.mul_(0.05)
    paths = folder / "small", folder / "large"
    for model, path in zip((small, large), paths):
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return paths


def add_pair_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--large", help="large checkpoint (default: the shipped toy-large, else a built pair)")
    parser.add_argument("--small", help="small checkpoint (default: the shipped toy-small, else a built pair)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")


def load_pair(args: argparse.Namespace) -> tuple[Model, Model, str]:
    """(large, small, description) from the options."""
    if args.threads:
        torch.set_num_threads(args.threads)
    large_spec = args.large or default_model("large")
    small_spec = args.small or default_model("small")
    if large_spec and small_spec:
        what = "toy pair" if not (args.large or args.small) else f"{large_spec} / {small_spec}"
    else:
        small_spec, large_spec = map(str, build_pair(Path(tempfile.mkdtemp(prefix="relaykit-bench-"))))
        what = "pair built from configs (2-layer small; 16-layer large with 14 damped layers)"
    return load_model(large_spec, name="large"), load_model(small_spec, name="small"), what


def shipped_pair(device: str = "cpu", dtype: str = "auto") -> dict[str, Model]:
    """The shipped toy pair by role, on `device` in `dtype`."""
    from relaykit.toyworld import TOY_LARGE, TOY_SMALL

    return {role: load_model(str(path), name=role, device=device, dtype=dtype)
            for role, path in (("large", TOY_LARGE), ("small", TOY_SMALL))}


def prompts(tokenizer, count: int, length: int, seed: int = 0, toy: bool = False) -> list[list[int]]:
    """Toy test questions (chat template applied) for the toy pair, else random token ids."""
    if toy:
        from relaykit.decoding.prompt import encode_prompt
        from relaykit.toyworld.tasks import load_split

        return [encode_prompt(tokenizer, p.question) for p in load_split("test", count)]
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, len(tokenizer) - 1, (count, length), generator=generator)
    return ids.tolist()
