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
- `llama-cpp-python`: `/v1/completions` with a text prompt, `echo` and `logprobs`. Its entry e
  holds the distribution after prompt position e, one position off OpenAI's meaning; the token
  that follows is scored when the prompt starts with BOS, else only when it is among the `top`.
  relaykit checks that the server's tokens re-spell the prompt (docs/deploy.md has its costs).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable

from ..errors import RelaykitError

TOKEN_ID = "token_id:"  # vLLM's `return_tokens_as_token_ids` spelling of a token

Post = Callable[[str, dict], dict]  # (path under the endpoint's root, JSON body) -> JSON answer


@dataclass(frozen=True)
class ScoringProtocol:
    name: str

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


def _logprobs_of(answer: dict, protocol: str) -> dict:
    try:
        logprobs = answer["choices"][0]["logprobs"]
        assert isinstance(logprobs["top_logprobs"], list) and isinstance(logprobs["token_logprobs"], list)
        return logprobs
    except (KeyError, IndexError, TypeError, AssertionError):
        raise RelaykitError(f"the endpoint answered a {protocol} scoring request without choices[0].logprobs: "
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
    """Text prompts. Where the server splits the text otherwise than the sequence's tokens (a model
    may write two newline tokens where the tokenizer reads one double newline), the positions after the split are asked
    again with the text cut there, one request each; past a split that no text gives, the server
    writes on greedily from the last position it reads as the sequence, and its generated tokens'
    log-probabilities (which it computes on its own tokens) give the rows while it writes what the
    sequence holds (the row where it first differs included; later rows are left empty, which no
    greedy check reads)."""

    def score(self, post, model, tokens, k, top, tokenizer):
        n, rows, asked = len(tokens), {}, set()
        end = n
        while True:
            asked.add(end)
            rows.update(self._read(post, model, tokens[:end], top, tokenizer))
            missing = [p for p in range(n - k, n) if p not in rows]
            if not missing:
                return [rows[p] for p in range(n - k, n)]
            end = missing[0] + 1
            if end in asked:
                for position, row in self._written(post, model, tokens, missing[0] - 1, top, tokenizer).items():
                    rows.setdefault(position, row)
                return [rows.get(p, {}) for p in range(n - k, n)]

    def _written(self, post, model, tokens, last, top, tokenizer) -> dict[int, dict[int, float]]:
        """Rows from position `last` + 1 on, from the server writing greedily after
        `tokens[: last + 1]` (whose row at `last` it has given)."""
        body = {"model": model, "prompt": tokenizer.decode(tokens[: last + 1], skip_special_tokens=False),
                "max_tokens": len(tokens) - last, "temperature": 0.0, "logprobs": top, "repeat_penalty": 1.0}
        logprobs = _logprobs_of(post("completions", body), self.name)
        names, rows = _names(tokenizer), {}
        for i, (text, entry) in enumerate(zip(logprobs.get("tokens") or [], logprobs["top_logprobs"])):
            if entry is None:
                break
            rows[last + i] = {names[key]: float(value) for key, value in entry.items() if key in names}
            index = last + 1 + i  # where the token it wrote stands in the sequence
            if index >= len(tokens) or text not in names:
                if index < len(tokens):
                    raise RelaykitError(f"llama-cpp-python's server wrote a token relaykit cannot name: {text!r}")
                break
            if names[text] != tokens[index]:
                break  # it wrote otherwise than the sequence: later positions are not the sequence's
        return rows

    def _read(self, post, model, tokens, top, tokenizer) -> dict[int, dict[int, float]]:
        """position -> row, for the positions whose distribution the server computed after exactly
        `tokens[: position + 1]`."""
        # an end of sequence after the text makes the server score its last position (a prompt's
        # entries stop before the token the server writes, which it leaves out when it ends the text)
        sent = [*tokens, tokenizer.eos_token_id]
        body = {"model": model, "prompt": tokenizer.decode(sent, skip_special_tokens=False), "max_tokens": 1,
                "temperature": 0.0, "echo": True, "logprobs": top, "repeat_penalty": 1.0}
        logprobs = _logprobs_of(post("completions", body), self.name)
        # llama-cpp-python 0.3.36: entry e holds the distribution at prompt position p_e (it predicts
        # token p_e + 1) and scores S[p_e], S being the prompt without a leading BOS; positions whose
        # S token is BOS are left out, and the first entry is null
        bos, n = tokenizer.bos_token_id, len(tokens)
        scored = sent[1:] if sent[0] == bos else sent
        positions = [p for p in range(min(len(scored), n)) if scored[p] != bos]
        entries, actual, echoed = logprobs["top_logprobs"], logprobs["token_logprobs"], logprobs.get("tokens") or []
        # the entries agree with the sequence up to the first token the server spells otherwise
        spelled = [tokenizer.decode([scored[p]], skip_special_tokens=True) for p in positions]
        agreed = next((i for i, (a, b) in enumerate(zip(spelled, echoed)) if a != b), min(len(spelled), len(echoed)))
        names, rows = _names(tokenizer), {}
        for e, p in enumerate(positions[: min(agreed, len(entries))]):
            if entries[e] is None:
                continue
            row = {names[key]: float(value) for key, value in entries[e].items() if key in names}
            if p + 1 < n and scored[p] == tokens[p + 1] and actual[e] is not None:
                row[tokens[p + 1]] = float(actual[e])  # a prompt with a leading BOS scores the token that follows
            rows[p] = row
        return rows


def _names(tokenizer) -> dict[str, int]:
    """Token text -> id, as llama-cpp-python's server names tokens (decoded, special ones as ""):
    the first id of each text; "" is the end of sequence, the one special token a model writes."""
    with _NAMING:
        names = _NAMES.get(tokenizer)
        if names is None:
            names = {"": tokenizer.eos_token_id}
            special = set(tokenizer.all_special_ids)
            for index in range(len(tokenizer)):
                if index not in special:
                    names.setdefault(tokenizer.decode([index]), index)
            _NAMES[tokenizer] = names
        return names


_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per tokenizer
_NAMING = threading.Lock()


PROTOCOLS: dict[str, ScoringProtocol] = {
    p.name: p for p in (
        VLLM("vllm"),  # vLLM, relaykit serve
        SGLang("sglang"),
        LlamaCppPython("llama-cpp-python"),
    )
}
TEXT_ONLY = "completions"  # a protocol name for endpoints scored by none of the above
