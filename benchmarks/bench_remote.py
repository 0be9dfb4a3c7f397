"""Benchmark: token-level strategies with the large model behind an endpoint (`relaykit serve`
holding the shipped toy-large on loopback, scored through its log-probabilities) against the same
strategies in-process, on fresh toy problems at batch 1 (one problem at a time, the two runs taking
turns problem by problem, one thread each side).

Per strategy: accuracy both ways, problems whose text differs, the large model's requests per
problem, tokens re-sent per token written (the context each scoring request carries again) and
bytes per problem, and the wall-time ratio remote / in-process. Ends with one JSON line.

    python benchmarks/bench_remote.py --seed 7521 --limit 150
    python benchmarks/bench_remote.py --seed 7522 --limit 150 --temperature 0.7 --strategies "speculative[k=8]"

With `--temperature`, each problem samples with seed 1000 + its index on both sides: where the
endpoint's top-20 log-probabilities change nothing, the texts are equal; the accuracy says what
the change costs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from relaykit import api
from relaykit.answers import answers_match, extract_answer
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sampler import SamplingConfig
from relaykit.decoding.stopping import StopConfig
from relaykit.evals.datasets import load_dataset
from relaykit.models.remote import TOP_LOGPROBS, load_remote
from relaykit.runtime.session import Session
from relaykit.serve import create_app, serving
from relaykit.toyworld import SHIPPED_CUES, TOY_LARGE

STRATEGIES = [
    f"relaygen[cues={SHIPPED_CUES}]",  # the shipped calibration: cues and the check's threshold
    f"relaygen[cues={SHIPPED_CUES} speculative=32 draft_confidence=0.8]",  # the pair's tuned RelayGen
    "speculative[k=128 max_k=128 draft_confidence=0.8]",  # the pair's tuned speculative decoding
    "speculative[k=8]",
    "uncertainty",
]


def run(session: Session, strategy, prompt: list[int], sampling: SamplingConfig):
    started = time.perf_counter()
    result = session.submit(strategy, prompt, sampling).result()
    return result, time.perf_counter() - started


def mass_left_out(model, sequences: list[list[int]], top: int = TOP_LOGPROBS) -> dict[str, float]:
    """The large model's probability mass outside its `top` most likely tokens, averaged over every
    position of `sequences`, at temperature 1 and 0.7: what sampling over an endpoint leaves out."""
    masses: dict[str, list[float]] = {"1.0": [], "0.7": []}
    with torch.no_grad():
        for tokens in sequences:
            logits = model.hf(torch.tensor([tokens])).logits[0].float()
            for temperature in masses:
                probs = (logits / float(temperature)).softmax(-1)
                masses[temperature] += (1 - probs.topk(top, -1).values.sum(-1)).tolist()
    return {t: sum(m) / len(m) for t, m in masses.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="toy:fresh:SEED (use a seed never measured before)")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=0.0, help="sample at this temperature (0: greedy)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    local = api.load_models({"large": None, "small": None})
    problems = load_dataset(f"toy:fresh:{args.seed}", args.limit)
    prompts = [encode_prompt(local["large"].tokenizer, p.prompt) for p in problems]
    stop = StopConfig(max_new_tokens=args.max_new_tokens)
    report = {}
    with serving(create_app({"large": local["large"]})) as url:
        remote = {"large": load_remote(f"{url}/v1#large", str(TOY_LARGE), name="large"), "small": local["small"]}
        sessions = {"here": Session(local), "there": Session(remote)}
        for spec in args.strategies.split(","):
            built = {side: api.build_strategy(spec, models, stop=stop)
                     for side, models in (("here", local), ("there", remote))}
            right = {"here": 0, "there": 0}
            seconds = {"here": 0.0, "there": 0.0}
            differ = requests = sent = scored = written = traffic = 0
            for index, (problem, prompt) in enumerate(zip(problems, prompts)):
                sampling = SamplingConfig(temperature=args.temperature, seed=1000 + index)
                results = {}
                for side in ("here", "there"):
                    results[side], spent = run(sessions[side], built[side], prompt, sampling)
                    seconds[side] += spent
                    right[side] += answers_match(extract_answer(results[side].text), problem.reference)
                differ += results["here"].text != results["there"].text
                usage = results["there"].usage["large"]
                requests += usage.requests
                sent += usage.tokens_sent
                scored += usage.tokens_scored
                traffic += usage.bytes_sent + usage.bytes_received
                written += len(results["there"].token_ids)
            n = len(problems)
            report[spec] = {
                "accuracy_in_process": right["here"] / n, "accuracy_remote": right["there"] / n,
                "texts_differing": differ, "requests_per_problem": requests / n,
                "tokens_resent_per_token_written": sent / max(written, 1), "positions_scored_per_problem": scored / n,
                "kilobytes_per_problem": traffic / n / 1000,
                "time_remote_over_in_process": seconds["there"] / seconds["here"],
            }
            print(f"{spec}: {json.dumps(report[spec])}", flush=True)
    written = [r.token_ids for r in sessions["here"].generate(api.build_strategy("large", local, stop=stop),
                                                               prompts[:20])]
    left_out = mass_left_out(local["large"], [p + w for p, w in zip(prompts, written)])
    print(f"large model's mass outside its top {TOP_LOGPROBS}: {left_out}")
    print(json.dumps({"seed": args.seed, "problems": len(problems), "temperature": args.temperature,
                      "strategies": report,
                      f"mass_outside_top_{TOP_LOGPROBS}": left_out}))


if __name__ == "__main__":
    main()
