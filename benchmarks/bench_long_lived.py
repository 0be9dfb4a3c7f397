"""Benchmark: a long-lived scheduler. 10,000 short greedy requests (large, small and relaygen in
turn, up to 64 live at once, new ones joining as others finish) through one scheduler on the
shipped toy pair. Checks that every request's usage is exact (each model read every token before
its last one exactly once: prefill = the others' tokens, decode = its own, one forward per token
it wrote) and that resident memory late in the run (the last requests still in flight) and after
the last request stays within 5% of that after the first 1,000. Ends with one JSON line.

relaygen runs as `relaygen[check=inf]`, the paper's plain hand-off: with its check, the large model
also reads the small model's last segment and answer, and re-reads what it cut, by design."""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from pairs import shipped_pair
from relaykit import api
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime import Session
from relaykit.toyworld import load_split


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def exact_usage(prompt: list[int], result) -> bool:
    """Each model read all tokens before the last one it wrote, once (no speculation, no cuts)."""
    writers = ["prompt"] * len(prompt) + result.provenance
    for role, usage in result.usage.items():
        written = [i for i, w in enumerate(writers) if w == role]
        read = writers[: written[-1]] if written else []
        expected = (sum(w != role for w in read), sum(w == role for w in read), len(written))
        if (usage["prefill_tokens"], usage["decode_tokens"], usage["forward_calls"]) != expected:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=64, help="requests in flight at once")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pair = shipped_pair()
    stop = StopConfig(max_new_tokens=args.max_new_tokens)
    strategies = [api.build_strategy(name, pair, stop=stop)
                  for name in ("large", "small", "relaygen[check=inf]")]  # shipped cues
    prompts = [encode_prompt(pair["large"].tokenizer, p.question) for p in load_split("test", 500)]
    session = Session(pair)
    live, submitted, finished, inexact, marks = [], 0, 0, 0, {}
    started = time.perf_counter()
    while finished < args.requests:
        while len(live) < args.live and submitted < args.requests:
            prompt = prompts[submitted % len(prompts)]
            live.append((prompt, session.submit(strategies[submitted % len(strategies)], prompt)))
            submitted += 1
        session.scheduler.step()
        for prompt, handle in [item for item in live if item[1].done]:
            inexact += not exact_usage(prompt, handle.result())
            finished += 1
            if finished in (1_000, args.requests - 2 * args.live, args.requests):
                gc.collect()
                marks[finished] = resident_bytes()
        live = [item for item in live if not item[1].done]
    seconds = time.perf_counter() - started
    first, late, last = marks[1_000], marks[args.requests - 2 * args.live], marks[args.requests]
    print(f"{args.requests} requests in {seconds:.0f} s; resident MiB: {first / 2**20:.1f} after 1,000, "
          f"{late / 2**20:.1f} after {args.requests - 2 * args.live}, {last / 2**20:.1f} after all; "
          f"{inexact} with inexact usage")
    print(json.dumps({"benchmark": "long_lived", "requests": args.requests, "seconds": round(seconds, 1),
                      "resident_mib_after_1000": round(first / 2**20, 1), "resident_mib_late": round(late / 2**20, 1),
                      "resident_mib_at_end": round(last / 2**20, 1), "growth_late": round(late / first - 1, 4),
                      "growth_at_end": round(last / first - 1, 4), "inexact_usage": inexact}))


if __name__ == "__main__":
    main()
