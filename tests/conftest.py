"""Tiny real models built from configs (random weights, saved and loaded like any checkpoint)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch

from relaykit.models.loading import load_model

pytest_plugins = ["isolation"]  # tests marked `isolated` run in a child process (tests/isolation.py)

torch.set_num_threads(1)  # tiny models are overhead-bound; one thread avoids oversubscription

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHARACTERS = list(string.ascii_letters + string.digits + " .,!?+-*/=()\n")


def build_tokenizer(extra: list[str] | None = None):
    """A character-level fast tokenizer with bos/eos/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + CHARACTERS + (extra or []))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_checkpoint(
    folder: Path, arch: str = "llama", layers: int = 2, hidden: int = 64, seed: int = 0, extra_tokens=None
) -> Path:
    """Save a random-weight Llama, Qwen2 or Qwen3 checkpoint folder with the character tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

    tokenizer = build_tokenizer(extra_tokens)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[arch](**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger logits than the default init, so that greedy choices are clear
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_gpt2(folder: Path, name: str = "gpt2"):
    """A tiny GPT-2 checkpoint in `folder`, loaded: a model only the hf engine runs."""
    from transformers import AutoModelForCausalLM, GPT2Config

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model(str(folder), name=name)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Folders of tiny models: llama/qwen2 large (4 layers) and small (1 layer, other seed)."""
    root = tmp_path_factory.mktemp("models")
    return {
        (arch, size): build_checkpoint(
            root / f"{arch}-{size}", arch, layers=4 if size == "large" else 1, seed=1 if size == "large" else 2
        )
        for arch in ("llama", "qwen2")
        for size in ("large", "small")
    }


@pytest.fixture(scope="session")
def models(checkpoints):
    return {key: load_model(str(path), name="-".join(key)) for key, path in checkpoints.items()}


@pytest.fixture(scope="session")
def shipped_pair():
    """The toy pair shipped in the package, through relaykit's generic loading path, with the
    shipped models other strategies add: the step verifier (search), the answer prober (early
    exit), the difficulty model (adaptive), FusionRoute's router and domain experts, and the
    experts' base (merging)."""
    from relaykit import api
    from relaykit.strategies.base import EXPERTS

    return api.load_models({"large": None, "small": None, "verifier": None, "prober": None, "difficulty": None,
                            "router": None, "base": None, EXPERTS: None})


def prompts(tokenizer, count: int, seed: int = 0) -> list[list[int]]:
    """Varied short prompts of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        length = 3 + int(torch.randint(0, 12, (1,), generator=generator))
        text = "".join(CHARACTERS[int(j)] for j in torch.randint(0, 62, (length,), generator=generator))
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out
