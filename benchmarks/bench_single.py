"""Benchmark (a): relaykit `single` decode tokens/s against Hugging Face `model.generate`,
same model, greedy, batch 1 and batch 8, measured side by side (interleaved) in one run."""

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


def hf_generate(model, batch: list[list[int]], new_tokens: int) -> int:
    ids = torch.tensor(batch)
    out = model.hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, pad_token_id=model.tokenizer.pad_token_id)
    return (out.shape[1] - ids.shape[1]) * out.shape[0]


def relaykit_single(session: Session, strategy, batch: list[list[int]]) -> int:
    return sum(len(r.token_ids) for r in session.generate(strategy, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_pair_options(parser)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    large, _, what = load_pair(args)
    print(f"model: large of the {what}; {large.parameters / 1e6:.1f}M parameters; "
          f"torch threads {torch.get_num_threads()}")
    strategy = get_strategy("single")({"large": large},
                                      stop=StopConfig(max_new_tokens=args.new_tokens, ignore_eos=True))
    session = Session(strategy.models)
    ratios = {}
    for batch_size in (1, 8):
        batch = prompts(large.tokenizer, batch_size, args.prompt_length, toy=what == "toy pair")
        runs = {"hf": (lambda batch=batch: hf_generate(large, batch, args.new_tokens)),
                "relaykit": (lambda batch=batch: relaykit_single(session, strategy, batch))}
        for run in runs.values():
            run()  # warm-up
        rates = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                started = time.perf_counter()
                tokens = run()
                rates[name].append(tokens / (time.perf_counter() - started))
        hf, ours = statistics.median(rates["hf"]), statistics.median(rates["relaykit"])
        ratios[f"batch{batch_size}"] = round(ours / hf, 3)
        print(f"batch {batch_size}: HF generate {hf:8.1f} tok/s   relaykit single {ours:8.1f} tok/s   "
              f"ratio {ours / hf:.2f}x")
    print(json.dumps({"benchmark": "single_vs_hf_generate", "relaykit_over_hf_tokens_per_second": ratios}))


if __name__ == "__main__":
    main()
