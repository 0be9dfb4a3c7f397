"""Whether toy training repeats bit for bit across processes: train the toy-small shape for a few
steps in separate processes, with and without deterministic algorithms, and count the distinct
hashes of the weights. Ends with one JSON line: distinct hashes per setting (1 = repeatable)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from dataclasses import replace


def train_once(steps: int, threads: int, deterministic: bool) -> str:
    """One training in this process; the hash of the weights."""
    import torch

    from relaykit.toyworld.tokenizer import build_tokenizer
    from relaykit.train.toy.config import ToyPairConfig
    from relaykit.train.toy.model import build_model
    from relaykit.train.toy.stage import train_model

    torch.set_num_threads(threads)
    pair = ToyPairConfig()
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = build_model(pair.small, tokenizer)
    train_model(model, tokenizer, replace(pair.small_train, steps=steps, deterministic=deterministic), 0, "toy-small")
    digest = hashlib.sha256()
    for _, tensor in sorted(model.state_dict().items()):
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="processes per setting")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(train_once(args.steps, args.threads, args.child == "on"))
        return
    distinct = {}
    for setting in ("on", "off"):
        hashes = []
        for _ in range(args.runs):
            command = [sys.executable, __file__, "--child", setting, "--steps", str(args.steps),
                       "--threads", str(args.threads)]
            hashes.append(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])
        distinct[f"deterministic_{setting}"] = len(set(hashes))
        print(f"deterministic algorithms {setting}: {args.runs} processes, weight hashes {hashes}")
    print(json.dumps({"benchmark": "train_determinism", "steps": args.steps, "threads": args.threads,
                      "distinct_hashes": distinct}))


if __name__ == "__main__":
    main()
