"""Strategies over OpenAI-compatible completions endpoints (`--large http://host:port/v1#name`).

The same methods as in-process, driven with text requests: `single` is one request; `relaygen`
asks the large model to write until a cue or `</think>` (stop strings), checks the match with the
in-process rules (word boundaries, no sentence end inside "3.5"), and asks the small model to
write until the sentence ends. Each request re-sends the text so far; reusing its KV cache is the
engine's prefix cache's job. Token counts and provenance use the local tokenizer; FLOPs are not
known for a remote model and are reported as 0.
"""

from __future__ import annotations

import time

from ..decoding.result import GenerationResult, make_result
from ..decoding.sampler import SamplingConfig
from ..decoding.sequence import PROMPT, Sequence
from ..decoding.stopping import StopConfig
from ..decoding.usage import Usage
from ..errors import RelaykitError
from ..models.loading import check_same_tokenizer
from ..models.remote import RemoteModel
from ..text import THINK_END, cue_pattern, ends_sentence, find_cue, load_cues
from .base import NoOptions
from .relaygen import RelayGenConfig

# Stop strings that may end a sentence; `ends_sentence` then decides (so "3.5" does not end one).
SENTENCE_STOPS = [". ", ".\n", "! ", "!\n", "? ", "?\n", "\n\n"]


class RemoteStrategy:
    """One prompt at a time over HTTP; subclasses write `run()` out of `request` calls."""

    name = "?"
    roles: tuple[str, ...] = ("large",)
    Config: type = NoOptions
    batched = False

    def __init__(self, models: dict, config=None, sampling: SamplingConfig | None = None,
                 stop: StopConfig | None = None, kv_policy=None):
        missing = [r for r in self.roles if r not in models]
        if missing:
            raise RelaykitError(f"strategy {self.name!r} needs a {' and a '.join(missing)} model")
        if kv_policy is not None and kv_policy.name != "full":
            raise RelaykitError("KV policies apply to in-process models; a remote engine manages its own cache")
        self.models = {role: models[role] for role in self.roles}
        for role in self.roles[1:]:
            check_same_tokenizer(self.models[self.roles[0]], self.models[role])
        self.config = config if config is not None else self.Config()
        self.sampling = sampling or SamplingConfig()
        if self.sampling.top_k:
            raise RelaykitError("remote models take temperature, top-p and seed; top-k is not part of the completions API")
        self.stop_config = stop or StopConfig()
        self.tokenizer = self.models[self.roles[0]].tokenizer

    def generate(self, prompts: list[list[int]], stop: StopConfig | None = None) -> list[GenerationResult]:
        stop = stop or self.stop_config
        results = []
        for prompt in prompts:
            self.sequence, self.stop, self.events, self.ended = Sequence(prompt), stop, [], False
            self.usage = {role: Usage() for role in self.roles}
            started = time.perf_counter()
            self.run()
            self._finish()
            usage = {role: u.to_dict() for role, u in self.usage.items()}
            results.append(make_result(self.sequence, self.tokenizer, usage, time.perf_counter() - started, self.events))
        return results

    @property
    def remaining(self) -> int:
        return self.stop.max_new_tokens - len(self.sequence.generated)

    def text(self) -> str:
        return self.tokenizer.decode(self.sequence.tokens, skip_special_tokens=False)

    def request(self, role: str, max_tokens: int, stop: list[str]) -> str | None:
        """Ask `role` to continue the text; its tokens join the sequence with provenance `role`.
        Returns the stop string that ended the request, or None; sets `ended` when the model
        ended the text (a stop with no stop string: its end-of-sequence token, appended here)."""
        model: RemoteModel = self.models[role]
        stops = stop + [s for s in self.stop.stop_strings if s not in stop]
        answer = model.complete(self.text(), max_tokens, stops, self.sampling.temperature, self.sampling.top_p, self.sampling.seed)
        before = len(self.sequence)
        self.sequence.extend(self.tokenizer(answer.text, add_special_tokens=False)["input_ids"], role)
        self.sequence.truncate(before + max_tokens)  # the local tokenizer may count a few more tokens
        usage = self.usage[role]
        usage.prefill_tokens += answer.prompt_tokens
        usage.decode_tokens += answer.completion_tokens
        usage.forward_calls += 1
        usage.seconds += answer.seconds
        # the engine stopped at the first stop string in the new text (its end may fall inside the last token)
        found = [(answer.text.find(s) + len(s), s) for s in stops if s in answer.text]
        matched = min(found)[1] if found and answer.finish_reason == "stop" else None
        if answer.finish_reason == "stop" and matched is None:
            self.sequence.append(self.tokenizer.eos_token_id, role)
            self.ended = True
        self.ended |= matched is not None and matched not in stop  # one of the user's stop strings
        return matched

    def _finish(self) -> None:
        """Hold the text to the budget (an engine may count tokens differently) and mark it finished."""
        sequence = self.sequence
        sequence.truncate(sequence.prompt_length + min(len(sequence.generated), self.stop.max_new_tokens))
        sequence.finish("length" if self.remaining <= 0 and not self.ended else "stop")

    def run(self) -> None:
        raise NotImplementedError


class RemoteSingle(RemoteStrategy):
    """One model writes everything: a single request."""

    name = "large"

    def run(self) -> None:
        self.request(self.roles[0], self.remaining, [])


class RemoteSmall(RemoteSingle):
    name = "small"
    roles = ("small",)


class RemoteRelayGen(RemoteStrategy):
    """RelayGen over two endpoints, with the in-process rules (see strategies.relaygen)."""

    name = "relaygen"
    roles = ("large", "small")
    Config = RelayGenConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.speculative:
            raise RelaykitError("relaygen --speculative drafts token by token; use the engine's own speculative decoding for a remote large model")
        self.cues = load_cues(self.config.cues)
        self.pattern = cue_pattern(self.cues)
        self.cue_stops = sorted(set(self.cues), key=len, reverse=True)

    def run(self) -> None:
        writer, thinking = "large", True
        while not self.ended and self.remaining > 0:
            room = self.remaining - (self.config.answer_reserve + 2 if thinking and self.config.answer_handoff else 0)
            if thinking and room <= 0:  # the budget ends inside <think>: close it, the small model answers
                self.events.append({"position": len(self.sequence.generated), "direction": None, "reason": "budget", "cue": THINK_END})
                close = THINK_END if self.text().endswith("\n") else "\n" + THINK_END
                self.sequence.extend(self.tokenizer(close, add_special_tokens=False)["input_ids"], PROMPT)
                thinking, writer = False, self._switch(writer, "small", "answer", THINK_END)
            elif not thinking:
                self.request(writer, self.remaining, [])
            elif writer == "large":
                cue = self._large_turn(room)
                if cue == THINK_END:
                    thinking = False
                    if self.config.answer_handoff:
                        writer = self._switch(writer, "small", "answer", THINK_END)
                elif cue:
                    writer = self._switch(writer, "small", "cue", cue)
            else:
                if self._small_segment(room) == THINK_END:
                    thinking = False  # the small model goes on with the answer
                else:
                    writer = self._switch(writer, "large", "sentence end", None)

    def _switch(self, writer: str, to: str, reason: str, cue: str | None) -> str:
        if to != writer:
            self.events.append({"position": len(self.sequence.generated), "direction": f"{writer}->{to}", "reason": reason, "cue": cue})
        return to

    def _large_turn(self, room: int) -> str | None:
        """The large model writes until `</think>` or a selected cue completes (returned), or until
        the room is used up or the text ends (None)."""
        start = len(self.sequence)
        while not self.ended and len(self.sequence) - start < room:
            before = len(self._turn_text(start))
            matched = self.request("large", room - (len(self.sequence) - start), self.cue_stops + [THINK_END])
            if matched == THINK_END:
                return THINK_END
            if matched is None or self.pattern is None:
                continue
            if self._turn_text(start).endswith(matched) and matched[-1].isalnum():  # "So" needs the next character
                if self.request("large", 1, [THINK_END]) == THINK_END:
                    return THINK_END
            text = self._turn_text(start)
            cue = find_cue(text, self.pattern, before, 1)
            if cue and len(self.sequence) - start >= self.config.min_large_tokens:
                return cue
        return None

    def _small_segment(self, room: int) -> str | None:
        """The small model writes until the sentence ends or `</think>` (returned)."""
        start = len(self.sequence)
        while not self.ended and len(self.sequence) - start < room:
            before = len(self._turn_text(start))
            matched = self.request("small", room - (len(self.sequence) - start), SENTENCE_STOPS + [THINK_END])
            if matched == THINK_END:
                return THINK_END
            if matched and ends_sentence(self._turn_text(start), before, 1):
                return matched
        return None

    def _turn_text(self, start: int) -> str:
        """The turn's text with one token of context before it (for word boundaries)."""
        context = self.tokenizer.decode(self.sequence.tokens[start - 1 : start], skip_special_tokens=False)[-1:]
        return context + self.tokenizer.decode(self.sequence.tokens[start:], skip_special_tokens=False)


REMOTE = {"single": RemoteSingle, "large": RemoteSingle, "small": RemoteSmall, "relaygen": RemoteRelayGen}


def remote_strategy(name: str) -> type[RemoteStrategy]:
    """The remote implementation of a strategy, or a clear error when it has none."""
    if name not in REMOTE:
        raise RelaykitError(f"strategy {name!r} needs in-process models; over an HTTP endpoint these run: {', '.join(REMOTE)}")
    return REMOTE[name]
