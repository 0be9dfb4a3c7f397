r"""Benchmark: where a pair's small model disagrees with the large one, and by how much.

The large model writes its greedy solution to each problem; both models then read it in one
forward, and at every position where the small model's top token differs from the large model's
the large model's margin (its top logit minus its logit of the small model's token) is recorded.
A lenient check (RelayGen's `check=T`) keeps a disagreement below T logits; strict verification
(speculative decoding) keeps none. So these figures bound what a lenient check can save over
speculative decoding with the same small model: each kept disagreement saves one large forward,
and is harmless only if both tokens are right. Disagreements are counted by kind: digits (in the
toy world: the small model's arithmetic or copying errors) and the rest (wording).

Also counted: the large forwards any greedy method that keeps the large model's text needs with
this drafter (one for the prompt, one after each disagreement, one to check the last tokens).

    python benchmarks/bench_pair_disagreements.py --dataset toy:fresh:SEED --limit 140
    python benchmarks/bench_pair_disagreements.py --large runs/worded/toy-large --small runs/worded/toy-small \
        --dataset toy:worded:fresh:SEED
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from relaykit.decoding.prompt import encode_prompt
from relaykit.evals.datasets import load_dataset
from relaykit.toyworld import TOY_LARGE, TOY_SMALL

THRESHOLDS = (1.0, 2.0, 4.0, 8.0)


def disagreements(large, small, tokenizer, prompt: str, max_new_tokens: int) -> tuple[int, list[tuple[str, float]]]:
    """Tokens the large model writes greedily, and (kind, margin) at each position where the small
    model's top token differs from the large model's."""
    ids = encode_prompt(tokenizer, prompt)
    out = large.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)[0]
    large_logits = large(out[None]).logits[0, len(ids) - 1 : -1].float()
    small_top = small(out[None]).logits[0, len(ids) - 1 : -1].argmax(-1)
    large_top = large_logits.argmax(-1)
    found = []
    for i in (small_top != large_top).nonzero()[:, 0].tolist():
        pair = tokenizer.decode([int(large_top[i])]) + tokenizer.decode([int(small_top[i])])
        kind = "digit" if any(c.isdigit() for c in pair) else "wording"
        found.append((kind, float(large_logits[i, large_top[i]] - large_logits[i, small_top[i]])))
    return len(out) - len(ids), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", default=str(TOY_LARGE))
    parser.add_argument("--small", default=str(TOY_SMALL))
    parser.add_argument("--dataset", required=True, help="e.g. toy:fresh:SEED (a seed never used before)")
    parser.add_argument("--limit", type=int, default=140)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.large)
    large, small = (AutoModelForCausalLM.from_pretrained(path).eval() for path in (args.large, args.small))
    problems = load_dataset(args.dataset, args.limit)
    tokens, found = 0, []
    with torch.no_grad():
        for problem in problems:
            written, here = disagreements(large, small, tokenizer, problem.prompt, args.max_new_tokens)
            tokens += written
            found += here
    n = len(problems)
    figures: dict = {"dataset": args.dataset, "problems": n, "tokens_per_problem": round(tokens / n, 1)}
    for kind in ("digit", "wording"):
        margins = sorted(m for k, m in found if k == kind)
        figures[kind] = {
            "per_problem": round(len(margins) / n, 3),
            "margin_quartiles": [round(margins[int(q * (len(margins) - 1))], 2)
                                 for q in (0.0, 0.25, 0.5, 0.75, 1.0)] if margins else [],
            "per_problem_below": {str(t): round(sum(m < t for m in margins) / n, 3) for t in THRESHOLDS},
        }
    figures["exact_large_forwards_per_problem"] = round(len(found) / n + 2, 2)
    print(f"{n} problems, {figures['tokens_per_problem']} tokens each; per problem: "
          f"{figures['digit']['per_problem']} digit disagreements (margins {figures['digit']['margin_quartiles']}), "
          f"{figures['wording']['per_problem']} wording ones (margins {figures['wording']['margin_quartiles']})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
