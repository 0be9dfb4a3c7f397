"""How each engine's HTTP API scores a token sequence: per position, the log-probabilities of its
most likely next tokens (and of the token that follows there), in one request.

A protocol turns (token ids, k, top) into one request and its answer into `k` rows, row i a dict
{token id: log-probability} of the distribution after position n - k + i (n: the sequence's
length; the last row: after the whole sequence). A row holds the `top` most likely tokens and,
where the sequence goes on, the token it goes on with. Log-probabilities are the engine's raw
ones (no temperature), so they are logits up to a constant per row.

- `vllm`: `/v1/completions` with a token-id prompt, `echo`, `logprobs` and
  `return_tokens_as_token_ids` (vLLM; `relaykit serve` speaks it too). vLLM's `--max-logprobs`
  (default 20) bounds `top`.
- `sglang`: `/generate` with `input_ids`, `return_logprob`, `logprob_start_len` and
  `top_logprobs_num` (from SGLang's documented API; not run against a live SGLang here).
- `llama-cpp-python`: `/v1/completions` with a text prompt, `echo` and `logprobs`. Its entry i
  holds the distribution after prompt token i (shifted by one from OpenAI's meaning), so the
  token that follows is scored only when it is among the `top` (relaykit checks that the server's
  tokens re-spell the prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import RelaykitError

TOKEN_ID = "token_id:"

Post = Callable[[str, dict], dict]  # (path under the endpoint's root, JSON body) -> JSON answer


@dataclass(frozen=True)
class ScoringProtocol:
    name: str
    engines: str  # the engines that speak it, for messages and docs

    def score(self, post: Post, model: str, tokens: list[int], k: int, top: int, tokenizer) -> list[dict[int, float]]:
        raise NotImplementedError


def _id(key: str, tokenizer) -> int:
    if key.startswith(TOKEN_ID):
        return int(key[len(TOKEN_ID):])
    index = tokenizer.convert_tokens_to_ids(key)
    if index is None or index == tokenizer.unk_token_id:
        raise RelaykitError(f"the endpoint named a token relaykit cannot map to an id: {key!r}")
    return int(index)


def _rows_of(entries: list, actual: list, tokens: list[int], k: int, tokenizer) -> list[dict[int, float]]:
    """Rows from OpenAI-legacy `top_logprobs` entries aligned with the prompt (entry j: the
    distribution that predicts token j; entry n: after the prompt) and `token_logprobs`."""
    n, rows = len(tokens), []
    for j in range(n - k + 1, n + 1):
        row = {_id(key, tokenizer): float(value) for key, value in (entries[j] or {}).items()}
        if j < n and actual[j] is not None:
            row[tokens[j]] = float(actual[j])
        rows.append(row)
    return rows


def _logprobs_of(answer: dict, url: str) -> dict:
    try:
        logprobs = answer["choices"][0]["logprobs"]
        assert isinstance(logprobs["top_logprobs"], list) and isinstance(logprobs["token_logprobs"], list)
        return logprobs
    except (KeyError, IndexError, TypeError, AssertionError):
        raise RelaykitError(f"{url} answered without choices[0].logprobs (echo + logprobs): "
                            f"{str(answer)[:200]}") from None


class VLLM(ScoringProtocol):
    def score(self, post, model, tokens, k, top, tokenizer):
        body = {"model": model, "prompt": tokens, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top,
                "return_tokens_as_token_ids": True}
        logprobs = _logprobs_of(post("completions", body), self.name)
        entries, actual = logprobs["top_logprobs"], logprobs["token_logprobs"]
        if len(entries) != len(tokens) + 1:
            raise RelaykitError(f"the endpoint echoed {len(entries) - 1} prompt tokens for {len(tokens)} sent "
                                "(token-id prompts not taken as given?)")
        return _rows_of(entries, actual, tokens, k, tokenizer)


class SGLang(ScoringProtocol):
    def score(self, post, model, tokens, k, top, tokenizer):
        n = len(tokens)
        body = {"input_ids": tokens, "return_logprob": True, "logprob_start_len": n - k, "top_logprobs_num": top,
                "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}}
        answer = post("/generate", body)
        try:
            meta = (answer[0] if isinstance(answer, list) else answer)["meta_info"]
            prompt_top, prompt_actual = meta["input_top_logprobs"], meta["input_token_logprobs"]
            after = meta["output_top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise RelaykitError(f"/generate answered without meta_info logprobs: {str(answer)[:200]}") from None
        # entries cover tokens n - k .. n - 1 (entry 0: token n - k, whose distribution is not needed)
        rows = []
        for offset in range(1, k):
            row = {int(index): float(value) for value, index, *_ in (prompt_top[offset] or [])}
            value, index, *_ = prompt_actual[offset]
            if value is not None:
                row[int(index)] = float(value)
            rows.append(row)
        rows.append({int(index): float(value) for value, index, *_ in after or []})
        return rows


class LlamaCppPython(ScoringProtocol):
    def score(self, post, model, tokens, k, top, tokenizer):
        text = tokenizer.decode(tokens, skip_special_tokens=False)
        body = {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": top}
        logprobs = _logprobs_of(post("completions", body), self.name)
        echoed = logprobs.get("tokens") or []
        n = len(tokens)
        spelled = [tokenizer.decode([t], skip_special_tokens=False) for t in tokens]
        if echoed[:n] != spelled:
            raise RelaykitError("llama-cpp-python's server re-tokenised the prompt differently from the local "
                                f"tokenizer ({len(echoed) - 1} tokens echoed for {n}); its log-probabilities "
                                "cannot be aligned with the sequence")
        # entry i holds the distribution after prompt token i: it predicts token i + 1
        entries = logprobs["top_logprobs"]
        rows = []
        for j in range(n - k + 1, n + 1):
            rows.append({_id(key, tokenizer): float(value) for key, value in (entries[j - 1] or {}).items()})
        return rows


PROTOCOLS: dict[str, ScoringProtocol] = {
    p.name: p for p in (
        VLLM("vllm", "vLLM, relaykit serve"),
        SGLang("sglang", "SGLang"),
        LlamaCppPython("llama-cpp-python", "llama-cpp-python's server"),
    )
}
TEXT_ONLY = "completions"  # a protocol name for endpoints scored by none of the above
