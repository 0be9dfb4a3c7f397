"""Benchmark (b): relaykit `speculative` against Hugging Face assisted generation
(`assistant_model=`) on the same pair and prompts, greedy. Each method's speed-up is over its
own plain baseline (relaykit `single`, HF `generate`), all measured interleaved in one run.
relaykit also runs batched (HF assisted generation is batch 1 only)."""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from pairs import add_pair_options, load_pair, prompts
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime.session import Session
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig


def hf_run(large, small, batch, new_tokens):
    ids = torch.tensor(batch)
    extra = {"assistant_model": small.hf} if small is not None else {}
    out = large.hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                            pad_token_id=large.tokenizer.pad_token_id, **extra)
    return out[:, ids.shape[1]:].tolist()


def timed(run, repeats: int, count_tokens) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = count_tokens(run())
        rates.append(tokens / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_pair_options(parser)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--adaptive", action="store_true", help="relaykit adapts k (HF adapts its own by default)")
    parser.add_argument("--draft-confidence", type=float, default=0.0, help="relaykit stops drafting below it")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    large, small, what = load_pair(args)
    print(f"pair: {what}; large {large.parameters / 1e6:.1f}M, small {small.parameters / 1e6:.1f}M parameters; "
          f"torch threads {torch.get_num_threads()}")
    stop = StopConfig(max_new_tokens=args.new_tokens)
    pair = {"large": large, "small": small}
    single = get_strategy("single")(pair, stop=stop)
    speculative = get_strategy("speculative")(
        pair, SpeculativeConfig(k=args.k, adaptive=args.adaptive, max_k=max(args.k, 16),
                                draft_confidence=args.draft_confidence), stop=stop)
    batch = prompts(large.tokenizer, args.prompts, args.prompt_length, toy=what == "toy pair")
    session = Session(pair)

    # exactness first: all four produce the large model's greedy text
    reference = [r.token_ids for r in session.generate(single, batch)]
    assert [r.token_ids for r in session.generate(speculative, batch)] == reference
    eos = large.tokenizer.eos_token_id
    cut = lambda t: t[: t.index(eos) + 1] if eos in t else t  # noqa: E731
    assert [cut(hf_run(large, None, [p], args.new_tokens)[0]) for p in batch] == reference
    accepted = [r.provenance.count("small") for r in session.generate(speculative, batch)]
    acceptance = sum(accepted) / sum(len(t) for t in reference)

    count = lambda results: sum(len(r.token_ids) for r in results)  # noqa: E731
    count_hf = lambda outs: sum(len(cut(t)) for o in outs for t in o)  # noqa: E731
    runs = {
        "hf_generate": (lambda: [hf_run(large, None, [p], args.new_tokens) for p in batch], count_hf),
        "hf_assisted": (lambda: [hf_run(large, small, [p], args.new_tokens) for p in batch], count_hf),
        "relaykit_single": (lambda: [r for p in batch for r in session.generate(single, [p])], count),
        "relaykit_speculative": (lambda: [r for p in batch for r in session.generate(speculative, [p])], count),
        "relaykit_single_batched": (lambda: session.generate(single, batch), count),
        "relaykit_speculative_batched": (lambda: session.generate(speculative, batch), count),
    }
    for run, counter in runs.values():
        counter(run())  # warm-up
    rates = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so that machine noise hits every method alike
        for name, (run, counter) in runs.items():
            rates[name].append(timed(run, 1, counter))
    rate = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in rate.items():
        print(f"{name:30s} {value:8.1f} tok/s")
    ratios = {
        "hf_assisted_speedup": round(rate["hf_assisted"] / rate["hf_generate"], 3),
        "relaykit_speculative_speedup": round(rate["relaykit_speculative"] / rate["relaykit_single"], 3),
        "relaykit_speculative_batched_speedup": round(
            rate["relaykit_speculative_batched"] / rate["relaykit_single_batched"], 3
        ),
        "relaykit_speculative_over_hf_assisted": round(rate["relaykit_speculative"] / rate["hf_assisted"], 3),
    }
    print(f"draft tokens kept: {acceptance:.1%} of output; k = {args.k}")
    print(json.dumps({"benchmark": "speculative_vs_hf_assisted", **ratios}))


if __name__ == "__main__":
    main()
