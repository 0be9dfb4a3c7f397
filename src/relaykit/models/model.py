"""A loaded model: its weights, tokenizer and sizes for FLOP accounting, and the engine it runs on."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from ..errors import RelaykitError
from .engine import Engine
from .hf_engine import HFEngine
from .kv import KVPolicy
from .native import NativeEngine, supports_native

# the engines over a model's Hugging Face weights, by name (llama.cpp reads GGUF files: `llamacpp.LlamaCppModel`)
ENGINE_TYPES: dict[str, type[Engine]] = {"native": NativeEngine, "hf": HFEngine}


@dataclass
class Model:
    """A loaded causal LM with its tokenizer and the sizes used for FLOP accounting."""

    name: str
    source: str
    hf: Any  # the Hugging Face module (None for a model that brings its own weights: llama.cpp)
    tokenizer: Any
    parameters: int
    non_embedding_parameters: int
    engine_choice: str = "auto"  # an `ENGINE_TYPES` name, or auto: native where it runs the model, else hf
    int8: bool = False  # the native engine multiplies by int8 copies of the weights (bfloat16 activations)

    policy_hint: ClassVar[str] = ""  # ends the message refusing a KV policy
    in_process: ClassVar[bool] = True  # runs here (gives logits, holds a KV cache); an endpoint's model does not

    def scoring_refusal(self) -> str | None:
        """Why the model cannot give logits (None: it can; an endpoint's may not)."""
        return None

    @property
    def config(self):
        return self.hf.config

    @property
    def engine(self) -> str:
        if self.engine_choice != "auto":
            return self.engine_choice
        return "native" if supports_native(self.hf) else "hf"

    @property
    def engine_type(self) -> type[Engine]:
        return ENGINE_TYPES[self.engine]

    @property
    def native(self) -> bool:
        return self.engine == "native"

    def make_engine(self, policy: KVPolicy | None = None) -> Engine:
        """A new engine for this model, with no rows; a KV policy other than full needs an engine that
        computes attention itself (the native engine)."""
        policy = policy or KVPolicy()
        engine_type = self.engine_type
        if policy.name != "full" and not engine_type.runs_kv_policies:
            raise RelaykitError(
                f"KV policy {policy.name!r} needs the model's attention, which relaykit's native engine "
                f"computes for Llama-family models (Llama, Qwen2/3, Mistral, SmolLM); {self.name} runs on the "
                f"{self.engine} engine" + self.policy_hint
            )
        return engine_type(self, policy)

    @property
    def dtype(self) -> str:
        return "int8" if self.int8 else str(next(self.hf.parameters()).dtype).removeprefix("torch.")

    def describe(self) -> dict:
        """What a report says of the model: where it came from, its engine, dtype and size."""
        return {"source": self.source, "engine": self.engine, "dtype": self.dtype, "parameters": self.parameters}

    @property
    def layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def attention_width(self) -> int:
        """heads x head_dim (the width of QK^T and AV)."""
        head_dim = getattr(self.config, "head_dim", None) or self.config.hidden_size // self.config.num_attention_heads
        return self.config.num_attention_heads * head_dim

    @property
    def eos_token_ids(self) -> list[int]:
        ids = getattr(self.hf.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return [i for i in ids if i is not None]

    @cached_property
    def _flop_rates(self) -> tuple[float, float, float]:
        """FLOPs per token fed, per attended (query, key) pair and per logit position."""
        return (
            2.0 * self.non_embedding_parameters,
            4.0 * self.layers * self.attention_width,
            2.0 * self.config.hidden_size * self.config.vocab_size,
        )

    def forward_flops(self, tokens: int, attended: int, logit_positions: int) -> float:
        """FLOPs of one forward (formula in relaykit.decoding.usage)."""
        per_token, per_pair, per_logit = self._flop_rates
        return per_token * tokens + per_pair * attended + per_logit * logit_positions
