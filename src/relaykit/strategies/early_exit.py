"""Early exit against overthinking (DEER, Yang et al. 2025): while an inner strategy reasons, at
each reasoning transition (a line or sentence that starts with a cue such as "Wait" or "Check")
the answer is probed on a copy of the sequence: the thinking is closed there, an answer inducer
appended, and the probe model writes at most `probe_tokens` greedy tokens. When their mean
probability reaches `threshold` the generation exits with that answer; otherwise the probe is
dropped (it never enters the trace, its cost stays in the usage) and the reasoning goes on."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..decoding.sequence import PROMPT, Sequence
from ..errors import RelaykitError
from ..runtime.asks import Draft, Drop, Fork, Generate, Generated, Logits
from ..text import THINK_END, decoder
from ..vocabulary import EventKind, FinishReason
from .base import Strategy, reads, register, variant_of

TAIL_TOKENS = 12  # tokens decoded back from a new token to find a transition


@dataclass
class EarlyExitConfig:
    # the reasoning strategy: NAME or NAME[option=value ...], text-level (no token-level asks)
    inner: str = reads("strategy", "large")
    threshold: float = 0.95  # exit once the probe's mean token probability reaches it (DEER: 0.95)
    probe_tokens: int = 20  # tokens a probe may write (DEER: 20)
    # transition words, "|"-separated (DEER: "Wait"; the toy world's check rounds start with "Check")
    transitions: str = "Wait|Check|Alternatively|Hmm"
    # answer inducer (DEER's "</think>The answer is" for the toy world; real models: "</think>\\n\\boxed{")
    probe: str = THINK_END + "The answer is"
    probe_end: str = r"\.$"  # a regex: the probe stops once its text matches (or at end of sequence)
    probe_model: str = "large"  # the model that probes (DEER: the reasoning model; "prober": a trained answer prober)

    def __post_init__(self) -> None:
        if not 0 < self.threshold or self.probe_tokens < 1:
            raise RelaykitError("early-exit threshold must be > 0 and probe-tokens >= 1")


@dataclass
class Transition:
    """A new line or sentence starting with a cue: the thought before it ends at token `start`."""

    start: int


@register("early-exit")
class EarlyExit(Strategy):
    Config = EarlyExitConfig
    in_demo = False
    tunes = ("probe_model", "threshold")
    tuning_required = True  # a reasoning model probing itself can be confident and wrong (RESULTS.md, "Early exit")

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config if config is not None else EarlyExitConfig()
        written = variant_of(str(config.inner))  # as written: its turns, not the checks its files add
        if written.cls is EarlyExit:
            raise RelaykitError("early-exit cannot wrap early-exit")
        if written.cls.needs_logits(written.config):
            raise RelaykitError(f"early-exit needs a text-level inner strategy; {config.inner!r} asks for logits")
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        self.inner = variant_of(config.inner).build(self.models, self.sampling, self.stop_config)
        self.decode = decoder(self.tokenizer)
        words = [re.escape(w.strip()) for w in config.transitions.split("|") if w.strip()]
        self.cue = re.compile(r"^\s*(?:" + "|".join(words) + r")\W$")
        self.after_thought = re.compile(r"[.!?\n]\s*$")
        self.completing: dict[int, bool] = {}
        try:
            self.probe_end = re.compile(config.probe_end)
        except re.error as error:
            raise RelaykitError(f"early-exit probe-end is not a regular expression: {error}") from None

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return tuple(dict.fromkeys((*inner.cls.roles_of(inner.config), config.probe_model)))

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        return (config.probe_model,)

    def holdback(self) -> int | None:
        inner = self.inner.holdback()
        return None if inner is None else max(inner, TAIL_TOKENS)

    def run(self, request):
        inner = self.inner.run(request)
        answer = None
        while True:
            try:
                ask = inner.send(answer)
            except StopIteration as done:
                return done.value
            writes = isinstance(ask, Generate) and not isinstance(ask, Draft)  # drafts await a check
            if writes and ask.sequence is request.sequence:
                answer = yield from self._generate(request, ask)
                if answer is None:  # exited
                    inner.close()
                    return None
            else:
                answer = yield ask

    def _generate(self, request, ask: Generate):
        """The inner's ask, paused at each transition for a probe; None once the probe exits."""
        sequence, written = ask.sequence, 0
        while True:
            rule = self._rule(ask.ends_turn)
            got = yield Generate(ask.model, sequence, ask.max_tokens - written, rule, (*ask.pause_at, "\n", ". "))
            written += got.tokens
            if not isinstance(got.ended_by, Transition):
                return Generated(written, got.ended_by)
            if (yield from self._probe(request, got.ended_by.start)):
                return None

    def _rule(self, inner_rule):
        def ends_turn(sequence: Sequence, end: int):
            decided = inner_rule(sequence, end) if inner_rule is not None else None
            return decided if decided is not None else self._transition(sequence, end)

        return ends_turn

    def _transition(self, sequence: Sequence, end: int) -> Transition | None:
        """Whether token `end - 1` completes a cue that opens a line or sentence of the thinking
        (a cue completes on a non-word character, so other tokens are not decoded further)."""
        if not self._may_complete(sequence.tokens[end - 1]):
            return None
        first = max(sequence.prompt_length, end - TAIL_TOKENS)
        for start in range(end - 1, first, -1):
            if self.cue.match(self.decode(sequence.tokens[start:end])):
                if not self.after_thought.search(self.decode(sequence.tokens[first:start])):
                    return None
                thinking_over = THINK_END in self.decode(sequence.tokens[sequence.prompt_length : start])
                return None if thinking_over else Transition(start)
        return None

    def _may_complete(self, token: int) -> bool:
        """Whether a token's text ends on a non-word character; cached per token id."""
        flag = self.completing.get(token)
        if flag is None:
            flag = self.completing[token] = bool(re.search(r"\W$", self.decode([token])))
        return flag

    def _probe(self, request, start: int):
        """Probe the answer after the thought ending at token `start`; exit when confident."""
        model = self.config.probe_model
        probe = (yield Fork(request.sequence, 1, (model,)))[0]
        probe.truncate(start)
        inducer = self.tokenizer(self.config.probe, add_special_tokens=False)["input_ids"]
        probe.extend(inducer, PROMPT)
        answer, confidence = [], 0.0
        for _ in range(self.config.probe_tokens):
            probabilities = (yield Logits(model, probe))[-1].float().softmax(-1)
            token = int(probabilities.argmax())
            confidence += float(probabilities[token])
            probe.append(token, model)
            answer.append(token)
            if token in self.eos_token_ids or self.probe_end.search(self.decode(answer)):
                break
        yield Drop(probe)
        confidence /= len(answer)
        sequence = request.sequence
        fits = len(inducer) + len(answer) <= request.remaining() + (len(sequence) - start)
        if confidence < self.config.threshold or not fits:
            return False
        sequence.truncate(start)
        request.event(EventKind.EARLY_EXIT, cue=f"{confidence:.3f}")
        sequence.extend(inducer, PROMPT)
        sequence.extend(answer, model)
        sequence.finish(FinishReason.STOP)
        return True
