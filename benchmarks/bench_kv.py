"""Benchmark (c): KV policies at long length, on the toy world's long trajectories (>= 1,500
tokens). Decode throughput and peak KV memory of `single` with the full cache, RPC, H2O and
StreamingLLM (the last two at RPC's peak cache size), batch 1 and 8, greedy with ignore_eos,
measured side by side in one run; then the accuracy of each policy on long test problems."""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import torch

from pairs import build_pair, prompts
from relaykit.answers import answers_match, extract_answer
from relaykit.api import default_model
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models.kv import make_policy
from relaykit.models.loading import load_model
from relaykit.runtime.session import Session
from relaykit.strategies.base import get_strategy
from relaykit.toyworld.tasks import load_split

COMPARED = ("rpc", "h2o", "streaming")  # the policies measured beside the full cache


def rpc_peak_slots(prompt: int, new_tokens: int, interval: int, window: int, ratio: float) -> int:
    """Slots per row RPC holds at most while generating (every fed token; compaction is deferred
    to the forward after a compression step)."""
    generated = peak = 0
    for g in range(1, new_tokens):  # the last generated token is never fed
        generated += 1
        peak = max(peak, generated)
        if g >= interval + window and (g - window) % interval == 0:
            generated = int((g - window) / ratio) + window
    return prompt + peak


def measure(model, policies: dict, batch: list[list[int]], new_tokens: int, repeats: int) -> dict:
    """Per policy: throughput (the best of `repeats` rounds, interleaved: the machine is shared)
    and peak KV bytes."""
    stop = StopConfig(max_new_tokens=new_tokens, ignore_eos=True)
    strategy = get_strategy("single")({"large": model}, stop=stop)
    sessions = {name: Session(strategy.models, p) for name, p in policies.items()}
    seconds = {name: float("inf") for name in policies}
    for _ in range(repeats):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.generate(strategy, batch)
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    tokens = len(batch) * new_tokens
    caches = {name: session.runners["large"].engine.cache for name, session in sessions.items()}
    return {name: {"tokens_per_second": tokens / seconds[name], "peak_kv_bytes": cache.peak_bytes,
                   "peak_used_kv_bytes": cache.peak_used_bytes} for name, cache in caches.items()}


def profile(model, policies: dict, batch: list[list[int]], new_tokens: int, top: int = 8) -> None:
    """Where a generation's time goes, per policy: the functions with the most own time (cProfile)."""
    stop = StopConfig(max_new_tokens=new_tokens, ignore_eos=True)
    for name, policy in policies.items():
        strategy = get_strategy("single")({"large": model}, stop=stop)
        profiler = cProfile.Profile()
        profiler.runcall(Session(strategy.models, policy).generate, strategy, batch)
        stats = pstats.Stats(profiler)
        total = stats.total_tt
        print(f"  profile {name} ({total:.1f} s under cProfile):")
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
        for (file, line, function), (_, calls, own, *_rest) in rows:
            where = function if file == "~" else f"{Path(file).name}:{line} {function}"
            print(f"    {own / total:6.1%}  {own:6.2f} s  {calls:8d} calls  {where}")


def long_prompts(tokenizer, count: int) -> list[list[int]]:
    return [encode_prompt(tokenizer, p.question) for p in load_split("test", n=count, long=True)]


def accuracy(model, policies: dict, count: int, max_new_tokens: int) -> dict:
    problems = load_split("test", n=count, long=True)
    batch = [encode_prompt(model.tokenizer, p.question) for p in problems]
    scores = {}
    for name, policy in policies.items():
        strategy = get_strategy("single")({"large": model}, stop=StopConfig(max_new_tokens=max_new_tokens))
        session = Session(strategy.models, policy)
        results = [r for start in range(0, len(batch), 8) for r in session.generate(strategy, batch[start : start + 8])]
        scores[name] = sum(answers_match(extract_answer(r.text), p.answer) for r, p in zip(results, problems)) / count
        print(f"  accuracy {name:10s} {scores[name]:.3f} "
              f"(mean length {sum(len(r.token_ids) for r in results) / count:.0f})")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", help="checkpoint (default: the shipped toy-large, "
                                        "else a 16-layer Llama built from a config)")
    parser.add_argument("--new-tokens", type=int, default=1536)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--interval", type=int, default=256, help="RPC P (scaled down from 4096)")
    parser.add_argument("--window", type=int, default=32, help="RPC R")
    parser.add_argument("--ratio", type=float, default=4.0, help="RPC c")
    parser.add_argument("--per-group", action="store_true", help="RPC selects per KV group, not over all heads")
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--accuracy-problems", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--policies", default=",".join(COMPARED), help="policies measured beside the full cache")
    parser.add_argument("--profile", action="store_true", help="profile full and rpc at the largest batch")
    args = parser.parse_args()
    chosen = args.policies.split(",")
    unknown = set(chosen) - set(COMPARED)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; choose from {', '.join(COMPARED)}")
    torch.set_num_threads(args.threads)
    toy = not args.large and default_model("large")
    spec = args.large or toy or str(build_pair(Path(tempfile.mkdtemp(prefix="relaykit-bench-")))[1])
    model = load_model(spec, name="large")
    print(f"model: {spec if args.large or toy else 'built 16-layer Llama (128 wide)'}; {model.parameters / 1e6:.1f}M "
          f"parameters; {args.new_tokens} new tokens; threads {torch.get_num_threads()}")
    rpc = make_policy("rpc", interval=args.interval, window=args.window, ratio=args.ratio, per_group=args.per_group)
    budget = rpc_peak_slots(args.prompt_length, args.new_tokens, args.interval, args.window, args.ratio) - 32
    policies = {"full": None, "rpc": rpc, "h2o": make_policy("h2o", budget=budget, window=budget // 2, interval=32),
                "streaming": make_policy("streaming", budget=budget, interval=32)}
    policies = {name: policy for name, policy in policies.items() if name == "full" or name in chosen}
    print(f"RPC P={args.interval} R={args.window} c={args.ratio}; H2O and StreamingLLM keep {budget} slots, evicting "
          f"at +32 (RPC's peak); throughput is the best of {args.repeats} interleaved rounds")
    ratios = {}
    for size in (int(b) for b in args.batches.split(",") if b):  # --batches "": accuracy only
        batch = long_prompts(model.tokenizer, size) if toy else prompts(model.tokenizer, size, args.prompt_length)
        measure(model, {"warm-up": None}, [p[:8] for p in batch], 16, 1)
        measured = measure(model, policies, batch, args.new_tokens, args.repeats)
        full = measured["full"]
        print(f"batch {size}:")
        for name, m in measured.items():
            print(f"  {name:10s} {m['tokens_per_second']:8.1f} tok/s"
                  f"  x{m['tokens_per_second'] / full['tokens_per_second']:.2f}"
                  f"   peak KV used {m['peak_used_kv_bytes'] / 2**20:7.2f} MiB"
                  f" ({m['peak_used_kv_bytes'] / full['peak_used_kv_bytes']:.0%})"
                  f"   allocated {m['peak_kv_bytes'] / 2**20:7.2f} MiB"
                  f" ({m['peak_kv_bytes'] / full['peak_kv_bytes']:.0%})")
        ratios[f"batch{size}"] = {
            name: {"throughput": round(m["tokens_per_second"] / full["tokens_per_second"], 3),
                   "peak_kv_used": round(m["peak_used_kv_bytes"] / full["peak_used_kv_bytes"], 3),
                   "peak_kv_allocated": round(m["peak_kv_bytes"] / full["peak_kv_bytes"], 3)}
            for name, m in measured.items() if name != "full"
        }
    if args.profile:
        print(f"where the time goes at batch {size}:")
        profile(model, {"full": None, "rpc": rpc}, batch, args.new_tokens)
    if toy and args.accuracy_problems:
        print(f"accuracy on {args.accuracy_problems} long test problems, toy-large:")
        scores = accuracy(model, policies, args.accuracy_problems, 4096)
        ratios["accuracy"] = {name: round(value, 3) for name, value in scores.items()}
    else:
        print("accuracy: skipped" + ("" if toy else " (no shipped toy-large checkpoint)"))
    print(json.dumps({"benchmark": "kv_policies", "over_full_cache": ratios}))


if __name__ == "__main__":
    main()
