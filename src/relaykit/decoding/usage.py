"""Per-model accounting of forward work.

FLOPs per forward (a standard estimate, Kaplan et al. 2020 / Chinchilla appendix):
    2 x non-embedding parameters x tokens fed
  + 4 x layers x (heads x head_dim) x (keys attended) summed over the fed tokens   (QK^T and AV)
  + 2 x hidden x vocabulary x positions whose logits are computed                   (the LM head)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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
    # a model behind an endpoint: its requests, what they carried, and the positions it scored
    requests: int = 0
    tokens_sent: int = 0  # prompt tokens sent (re-sent context included)
    tokens_scored: int = 0  # positions whose log-probabilities came back
    bytes_sent: int = 0
    bytes_received: int = 0
    # drafts this model checked (speculative decoding, lookup, suffix drafting): checks, drafts
    # written and accepted, and how many checks accepted each number of drafts
    checks: int = 0
    drafted: int = 0
    accepted: int = 0
    accepted_lengths: dict[int, int] = field(default_factory=dict)

    def add(self, other: "Usage") -> None:
        self.prefill_tokens += other.prefill_tokens
        self.decode_tokens += other.decode_tokens
        self.forward_calls += other.forward_calls
        self.seconds += other.seconds
        self.flops += other.flops
        self.kv_peak_bytes = max(self.kv_peak_bytes, other.kv_peak_bytes)
        self.requests += other.requests
        self.tokens_sent += other.tokens_sent
        self.tokens_scored += other.tokens_scored
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.checks += other.checks
        self.drafted += other.drafted
        self.accepted += other.accepted
        for length, count in other.accepted_lengths.items():
            self.accepted_lengths[length] = self.accepted_lengths.get(length, 0) + count

    def count_check(self, drafted: int, accepted: int) -> None:
        """One check of `drafted` drafts that kept `accepted`."""
        self.checks += 1
        self.drafted += drafted
        self.accepted += accepted
        self.accepted_lengths[accepted] = self.accepted_lengths.get(accepted, 0) + 1

    def to_dict(self) -> dict:
        return asdict(self)


def acceptance(usages: list[Usage]) -> dict | None:
    """The drafts `usages` checked, together: checks, drafts written and accepted, the mean accepted
    per check, the acceptance rate and how many checks accepted each number of drafts (None: no check)."""
    total = Usage()
    for usage in usages:
        total.add(usage)
    if not total.checks:
        return None
    return {"checks": total.checks, "drafted": total.drafted, "accepted": total.accepted,
            "mean_accepted": total.accepted / total.checks,
            "acceptance_rate": total.accepted / total.drafted if total.drafted else None,
            "accepted_lengths": dict(sorted(total.accepted_lengths.items()))}
