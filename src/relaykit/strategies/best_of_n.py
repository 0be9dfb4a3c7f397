"""Best-of-N: N samples of an inner strategy (`inner`, e.g. "relaygen" or "relaygen[speculative=8]")
write on forks of the prompt, which is read once, and a reranker picks one:
- `majority`: the answer given most often (self-consistency, Wang et al. 2023; ties: the earliest);
- `likelihood`: the sample with the highest mean log-probability under the large model;
- `verifier`: the sample a step verifier (`relaykit train verifier`) rates highest at its end;
- `weighted`: verifier scores summed per answer (search-and-learn's weighted best-of-N); the best
  rated sample of the winning answer.
Every sample's work counts in the usage (scoring included); the text and provenance are the
chosen sample's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..answers import extract_answer
from ..errors import RelaykitError
from ..runtime.asks import Fork, Logits, Run
from ..verdicts import step_scores, verdict_ids
from ..vocabulary import LARGE, VERIFIER, EventKind
from .base import Strategy, reads, register, variant_of

Rerank = Literal["majority", "likelihood", "verifier", "weighted"]
RERANKERS = get_args(Rerank)
SCORER = {"majority": (), "likelihood": (LARGE,), "verifier": (VERIFIER,), "weighted": (VERIFIER,)}


@dataclass
class BestOfNConfig:
    n: int = 4  # samples; Wang et al. 2023 sample up to 40 paths
    inner: str = reads("strategy", "single")  # the strategy each sample runs: NAME or NAME[option=value ...]
    rerank: Rerank = "majority"  # majority, likelihood, verifier or weighted

    def __post_init__(self) -> None:
        if self.n < 1:
            raise RelaykitError(f"best-of-n n must be >= 1, got {self.n}")
        if self.rerank not in RERANKERS:
            raise RelaykitError(f"best-of-n rerank must be one of {', '.join(RERANKERS)}, got {self.rerank!r}")


@register("best-of-n")
class BestOfN(Strategy):
    Config = BestOfNConfig
    in_demo = False  # greedy samples all write the same text: best-of-n pays off with sampling

    def __init__(self, models: dict, config=None, *args, **kwargs):
        config = config if config is not None else BestOfNConfig()
        self.roles = self.roles_of(config)
        super().__init__(models, config, *args, **kwargs)
        self.inner = variant_of(config.inner).build(self.models, self.sampling, self.stop_config)
        if "verifier" in self.roles:
            self.verdicts = verdict_ids(self.models["verifier"].tokenizer)

    @classmethod
    def roles_of(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return tuple(dict.fromkeys((*inner.cls.roles_of(inner.config), *SCORER[config.rerank])))

    @classmethod
    def needs_logits(cls, config) -> tuple[str, ...]:
        inner = variant_of(config.inner)
        return tuple(dict.fromkeys((*inner.cls.needs_logits(inner.config), *SCORER[config.rerank])))

    @classmethod
    def needs_whole_distribution(cls, config) -> tuple[str, ...]:
        """The inner's, and the reranker's (a verifier's yes/no tokens; the likelihood's normalisation)."""
        inner = variant_of(config.inner)
        return tuple(dict.fromkeys((*inner.cls.needs_whole_distribution(inner.config), *SCORER[config.rerank])))

    def holdback(self) -> None:
        return None  # the chosen sample is known only at the end

    def run(self, request):
        branches = yield Fork(request.sequence, self.config.n, self.roles)  # the scorer reads the prompt once too
        # the samples stay this request's (keep): scoring reads them again, on rows still alive
        results = yield Run([(self.inner, branch) for branch in branches], keep=True)
        answers = [extract_answer(r.text) for r in results]
        if self.config.rerank == "majority":
            chosen, tally = majority(answers)
            request.event(EventKind.VOTE, cue=tally, detail={"samples": len(results)})
            return results[chosen]
        scores = []
        for branch, result in zip(branches, results):
            if self.config.rerank == "likelihood":
                scores.append((yield from likelihood(branch, len(result.token_ids))))
            else:
                scores.append((yield from verified(branch, self.verdicts, self.eos_token_ids)))
        candidates = range(len(results))
        if self.config.rerank == "weighted":
            totals: dict = {}
            for answer, score in zip(answers, scores):
                totals[answer] = totals.get(answer, 0.0) + score
            best_answer = max((a for a in totals if a is not None), key=lambda a: totals[a], default=None)
            candidates = [i for i in candidates if answers[i] == best_answer] or list(candidates)
        best = max(candidates, key=lambda i: scores[i])
        request.event(EventKind.RERANK, cue=f"{self.config.rerank} {scores[best]:.3f}",
                      detail={"samples": len(results)})
        return results[best]


def majority(answers: list) -> tuple[int, str]:
    """The first sample giving the most frequent answer (0 when none has one), and "votes/samples"."""
    votes = Counter(a for a in answers if a is not None)
    winner = votes.most_common(1)[0][0] if votes else None
    if winner is None:
        return 0, f"0/{len(answers)}"
    return answers.index(winner), f"{votes[winner]}/{len(answers)}"


def likelihood(sequence, written: int) -> Generator[Logits, Any, float]:
    """The large model's mean log-probability of the last `written` tokens of `sequence`."""
    if written <= 0:
        return float("-inf")
    logits = (yield Logits(LARGE, sequence, written + 1))[:-1].float()
    tokens = logits.new_tensor(sequence.tokens[len(sequence) - written :], dtype=int)[:, None]
    return float(logits.log_softmax(-1).gather(1, tokens).mean())


def verified(sequence, verdicts: tuple[int, int], eos_token_ids) -> Generator[Logits, Any, float]:
    """The verifier's P("+") at the sequence's last token (before a final end of sequence)."""
    ends = sequence.tokens[-1] in eos_token_ids and len(sequence) > sequence.prompt_length + 1
    logits = yield Logits(VERIFIER, sequence, 2 if ends else 1)
    return float(step_scores(logits[0], *verdicts))
