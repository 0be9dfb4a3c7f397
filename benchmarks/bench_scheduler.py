"""Benchmark: the scheduler (continuous batching, mixed strategies, fork) on the shipped toy pair,
every figure a ratio of two runs made side by side in this process.

- continuous_over_static: 64 greedy requests (large, speculative and relaygen in turn) arriving
  on a seeded schedule (exponential gaps of mean --gap seconds; one figure per gap, the first
  gap's is the headline), through one scheduler as they arrive, against static batches of 8
  requests of one strategy, each batch started once its 8 requests have arrived (the last one
  once all have); throughput = tokens / (last completion - first arrival). Also printed: each way's
  wall time and the seconds each model spent in forwards.
- mixed_forwards_saved: large-model forwards saved by running `large` and `relaygen` requests in
  one scheduler, against the two groups run one after the other.
- fork_prefill_ratio / fork_speedup: best-of-8 with fork on a 512-token prompt against 8
  independent requests of its child (prompt tokens the large model read; wall time).
- batch1_over_v1: `single` tokens/s at batch 1 against the code before the scheduler (a git
  revision run in a subprocess, interleaved with this code in a subprocess).
- relaygen_batch8_over_large: RelayGen tokens/s at batch 8 over `large` at batch 8, and the same
  with speculative large turns.
Ends with one JSON line of these ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from pairs import shipped_pair
from relaykit import api
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime import Session
from relaykit.toyworld import load_split

ROOT = Path(__file__).resolve().parents[1]


def build(pair, name: str, max_new_tokens: int, **options):
    """As the CLI builds it (the shipped pair's calibrated cues for relaygen)."""
    return api.build_strategy(name, pair, options, stop=StopConfig(max_new_tokens=max_new_tokens))


def continuous_over_static(pair, prompts, strategies, gap: float, seed: int) -> dict:
    """Throughputs of the arrival schedule, through the scheduler and in static batches."""
    rng = random.Random(seed)
    arrivals, clock = [], 0.0
    for i, prompt in enumerate(prompts):
        clock += rng.expovariate(1 / gap)
        arrivals.append((clock, strategies[i % len(strategies)], prompt))

    def forward_seconds(sessions) -> dict[str, float]:
        """Seconds each model spent in forwards, over `sessions`."""
        return {role: sum(s.runners[role].usage.seconds for s in sessions if role in s.runners) for role in pair}

    def continuous() -> tuple[int, float]:
        session, handles, pending = Session(pair), [], list(arrivals)
        scheduler = session.scheduler
        start = time.perf_counter()
        while pending or scheduler.busy:
            now = time.perf_counter() - start
            while pending and pending[0][0] <= now:
                _, strategy, prompt = pending.pop(0)
                handles.append(session.submit(strategy, prompt))
            if scheduler.busy:
                scheduler.step()
            elif pending:
                time.sleep(max(0.0, pending[0][0] - now))
        tokens = sum(len(h.result().token_ids) for h in handles)
        spent["continuous"] = forward_seconds([session])
        return tokens, time.perf_counter() - start - arrivals[0][0]

    def static() -> tuple[int, float]:
        batches = []
        for strategy in strategies:
            mine = [(t, p) for t, s, p in arrivals if s is strategy]
            batches += [(mine[i : i + 8][-1][0], strategy, [p for _, p in mine[i : i + 8]])
                        for i in range(0, len(mine), 8)]
        batches.sort(key=lambda b: b[0])
        before = forward_seconds(own.values())
        start, tokens = time.perf_counter(), 0
        for ready, strategy, batch in batches:
            wait = ready - (time.perf_counter() - start)
            if wait > 0:
                time.sleep(wait)
            tokens += sum(len(r.token_ids) for r in own[id(strategy)].generate(strategy, batch))
        after = forward_seconds(own.values())
        spent["static"] = {role: after[role] - before[role] for role in pair}
        return tokens, time.perf_counter() - start - arrivals[0][0]

    own = {id(strategy): Session(strategy.models) for strategy in strategies}  # static batches: a session each
    for strategy in strategies:
        own[id(strategy)].generate(strategy, prompts[:1])  # warm-up
    spent: dict[str, dict[str, float]] = {}
    (tokens_c, wall_c), (tokens_s, wall_s) = continuous(), static()
    # greedy: the same text either way on the CPU; a GPU's kernels may round differently by batch shape
    assert tokens_c == tokens_s or next(pair["large"].hf.parameters()).is_cuda, (tokens_c, tokens_s)
    return {"continuous_tokens_per_s": tokens_c / wall_c, "static_tokens_per_s": tokens_s / wall_s,
            "continuous_over_static": (tokens_c / wall_c) / (tokens_s / wall_s), "tokens_apart": tokens_c - tokens_s,
            "forward_seconds": {way: {role: round(t, 2) for role, t in roles.items()} for way, roles in spent.items()},
            "wall_seconds": {"continuous": round(wall_c, 2), "static": round(wall_s, 2)}}


def mixed_forwards_saved(pair, prompts, max_new_tokens: int) -> dict:
    """1 - large forwards of `large` + `relaygen` requests together / the two groups apart."""
    large, relaygen = build(pair, "large", max_new_tokens), build(pair, "relaygen", max_new_tokens)

    def forwards(groups) -> int:
        session = Session(pair)
        for handle in [session.submit(s, p) for s, batch in groups for p in batch]:
            handle.result()
        return session.runners["large"].usage.forward_calls

    together = forwards([(large, prompts), (relaygen, prompts)])
    apart = forwards([(large, prompts)]) + forwards([(relaygen, prompts)])
    return {"large_forwards_together": together, "large_forwards_apart": apart,
            "mixed_forwards_saved": 1 - together / apart}


def fork_figures(pair, prompt: list[int], n: int, max_new_tokens: int, repeats: int) -> dict:
    """Best-of-n with fork against n independent requests of its child (`single`)."""
    best_of = build(pair, "best-of-n", max_new_tokens, n=n, inner="single")
    child = best_of.inner
    walls = {"fork": [], "independent": []}
    read = {}
    for _ in range(repeats):
        for name, strategy, prompts in (("fork", best_of, [prompt]), ("independent", child, [prompt] * n)):
            session = Session(pair)
            started = time.perf_counter()
            for handle in [session.submit(strategy, p) for p in prompts]:
                handle.result()
            walls[name].append(time.perf_counter() - started)
            read[name] = session.runners["large"].usage.prefill_tokens  # prompt tokens read (children write the rest)
    fork, independent = statistics.median(walls["fork"]), statistics.median(walls["independent"])
    return {"prompt_tokens": len(prompt), "prefill_fork": read["fork"], "prefill_independent": read["independent"],
            "fork_prefill_ratio": read["fork"] / read["independent"], "fork_speedup": independent / fork}


SINGLE_RATE = """
import statistics, sys, time, torch
torch.set_num_threads({threads})
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import load_model
from relaykit.strategies.base import get_strategy
from relaykit.toyworld import TOY_LARGE, load_split
large = load_model(str(TOY_LARGE), name="large")
strategy = get_strategy("single")({{"large": large}}, stop=StopConfig(max_new_tokens={tokens}, ignore_eos=True))
prompt = encode_prompt(large.tokenizer, load_split("test", 1)[0].question)
try:  # a session runs strategies; older revisions ran them by themselves
    from relaykit.runtime.session import Session
    session = Session(strategy.models)
    run = lambda prompts: session.generate(strategy, prompts)
except ImportError:
    run = strategy.generate
run([prompt])
rates = []
for _ in range({repeats}):
    started = time.perf_counter()
    count = len(run([prompt])[0].token_ids)
    rates.append(count / (time.perf_counter() - started))
print(statistics.median(rates))
"""


def batch1_over_v1(revision: str, rounds: int, tokens: int, threads: int) -> dict:
    """`single` at batch 1: this code against `revision`, each in a subprocess, interleaved."""
    old = Path(tempfile.mkdtemp(prefix="relaykit-v1-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(old, filter="data")
    code = SINGLE_RATE.format(threads=threads, tokens=tokens, repeats=5)
    rates = {"v1": [], "now": []}
    for _ in range(rounds):
        for name, src in (("v1", old / "src"), ("now", ROOT / "src")):
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                 env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
            rates[name].append(float(out.stdout.strip().splitlines()[-1]))
    v1, now = statistics.median(rates["v1"]), statistics.median(rates["now"])
    return {"v1_revision": revision, "v1_tokens_per_s": v1, "now_tokens_per_s": now, "batch1_over_v1": now / v1}


def relaygen_over_large(pair, prompts, max_new_tokens: int, repeats: int, speculative: int) -> dict:
    """Tokens/s at batch 8: relaygen (plain and with speculative large turns) over large."""
    runs = {"large": build(pair, "large", max_new_tokens), "relaygen": build(pair, "relaygen", max_new_tokens),
            "relaygen_speculative": build(pair, "relaygen", max_new_tokens, speculative=speculative)}
    rates = {name: [] for name in runs}
    sessions = {name: Session(strategy.models) for name, strategy in runs.items()}
    for name, strategy in runs.items():
        sessions[name].generate(strategy, prompts[:1])  # warm-up
    for _ in range(repeats):
        for name, strategy in runs.items():
            started = time.perf_counter()
            tokens = sum(len(r.token_ids) for r in sessions[name].generate(strategy, prompts))
            rates[name].append(tokens / (time.perf_counter() - started))
    large = statistics.median(rates["large"])
    return {"relaygen_batch8_over_large": statistics.median(rates["relaygen"]) / large,
            "relaygen_speculative_batch8_over_large": statistics.median(rates["relaygen_speculative"]) / large}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--gaps", default="0.03,0.01,0.1", help="mean seconds between arrivals (comma-separated)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--v1", default="b35fb4a", help="the revision before the scheduler")
    parser.add_argument("--v1-rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: continuous,mixed,fork,v1,relaygen")
    parser.add_argument("--device", default="cpu", help="where the pair runs (cuda on a GPU machine; skip v1 there)")
    parser.add_argument("--dtype", default="auto",
                        help="the pair's dtype (auto: float32 for the toy pair on a CPU, bfloat16 on a GPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(args.skip.split(","))
    pair = shipped_pair(args.device, args.dtype)
    tokenizer = pair["large"].tokenizer
    questions = [p.question for p in load_split("test", max(args.requests, 16))]
    prompts = [encode_prompt(tokenizer, q) for q in questions]
    figures: dict = {}
    if "continuous" not in skip:
        strategies = [build(pair, name, args.max_new_tokens) for name in ("large", "speculative", "relaygen")]
        for i, gap in enumerate(float(g) for g in args.gaps.split(",")):
            measured = continuous_over_static(pair, prompts[: args.requests], strategies, gap, seed=0)
            walls, in_forwards = measured.pop("wall_seconds"), measured.pop("forward_seconds")
            print(f"gap {gap} s: continuous {measured['continuous_tokens_per_s']:.0f} tok/s, "
                  f"static {measured['static_tokens_per_s']:.0f} tok/s; walls {walls}, "
                  f"seconds in forwards {in_forwards}")
            if i == 0:
                figures |= measured | {"gap": gap}
            figures[f"continuous_over_static_gap_{gap}"] = measured["continuous_over_static"]
    if "mixed" not in skip:
        figures |= mixed_forwards_saved(pair, prompts[:16], args.max_new_tokens)
        print(f"large forwards: {figures['large_forwards_together']} together, {figures['large_forwards_apart']} apart")
    if "fork" not in skip:
        long_prompt = tokenizer(" ".join(questions), add_special_tokens=False)["input_ids"][:512]
        figures |= fork_figures(pair, long_prompt, 8, 32, args.repeats)
        print(f"fork: {figures['prefill_fork']} prompt tokens read, against {figures['prefill_independent']}")
    if "v1" not in skip:
        figures |= batch1_over_v1(args.v1, args.v1_rounds, 256, args.threads)
        print(f"batch 1: {figures['now_tokens_per_s']:.0f} tok/s, {args.v1}: {figures['v1_tokens_per_s']:.0f} tok/s")
    if "relaygen" not in skip:
        figures |= relaygen_over_large(pair, prompts[:8], args.max_new_tokens, args.repeats, speculative=8)
    ratios = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps({"benchmark": "scheduler", "device": args.device, "dtype": pair["large"].dtype,
                      "threads": args.threads, **ratios}))


if __name__ == "__main__":
    main()
