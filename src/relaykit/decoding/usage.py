"""Per-model accounting of forward work.

FLOPs per forward (a standard estimate, Kaplan et al. 2020 / Chinchilla appendix):
    2 x non-embedding parameters x tokens fed
  + 4 x layers x (heads x head_dim) x (keys attended) summed over the fed tokens   (QK^T and AV)
  + 2 x hidden x vocabulary x positions whose logits are computed                   (the LM head)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Usage:
    """What one model did. `prefill_tokens`: tokens it read that it did not write (prompt,
    other models' tokens); `decode_tokens`: tokens it read back after writing them itself."""

    prefill_tokens: int = 0
    decode_tokens: int = 0
    forward_calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    kv_peak_bytes: int = 0  # most KV-cache bytes held at once (a maximum, not a sum)

    def add(self, other: "Usage") -> None:
        self.prefill_tokens += other.prefill_tokens
        self.decode_tokens += other.decode_tokens
        self.forward_calls += other.forward_calls
        self.seconds += other.seconds
        self.flops += other.flops
        self.kv_peak_bytes = max(self.kv_peak_bytes, other.kv_peak_bytes)

    def to_dict(self) -> dict:
        return asdict(self)
