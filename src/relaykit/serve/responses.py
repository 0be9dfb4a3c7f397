"""OpenAI-shaped bodies from relaykit results: usage (with `usage.relaykit`), choices, SSE chunks."""

from __future__ import annotations

import json
import time
import uuid

from ..decoding.result import GenerationResult
from ..decoding.usage import Usage, acceptance
from ..vocabulary import LARGE, FinishReason

USAGE_FIELDS = ("prefill_tokens", "decode_tokens", "forward_calls", "flops")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def finish_reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == FinishReason.LENGTH else "stop"


def unwritten() -> GenerationResult:
    """The result of a choice asked to write nothing (`max_tokens` 0 with echo: the prompt is only scored)."""
    return GenerationResult("", [], [], {}, 0.0, FinishReason.LENGTH)


def usage(prompts: list[list[int]], results: list[GenerationResult]) -> dict:
    """OpenAI's token counts (each prompt counted once, whatever `n`) plus what every model
    spent (scoring requests' results, which write nothing, included) and the large model's share
    of the written tokens."""
    totals: dict[str, Usage] = {}
    for result in results:
        for role, spent in result.usage.items():
            totals.setdefault(role, Usage()).add(spent)
    models = {role: {field: getattr(total, field) for field in USAGE_FIELDS} for role, total in totals.items()}
    for role, total in totals.items():
        if total.checks:  # drafts this model checked (speculative decoding, suffix drafting)
            models[role]["drafts"] = acceptance([total])
    written = sum(len(result.provenance) for result in results)
    by_large = sum(result.tokens_by(LARGE) for result in results)
    prompt_tokens = sum(len(prompt) for prompt in prompts)
    completion_tokens = sum(len(result.token_ids) for result in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "relaykit": {"models": models, "large_token_share": by_large / written if written else None},
    }


def sse(data: dict | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
