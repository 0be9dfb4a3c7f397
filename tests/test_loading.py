"""Loading errors are one clear message; tokenizers must agree for token-level strategies."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import build_checkpoint
from relaykit.errors import RelaykitError
from relaykit.models.hf_engine import HFEngine
from relaykit.models.loading import check_same_tokenizer, load_model
from relaykit.strategies.base import get_strategy


def test_mismatched_tokenizers_are_refused(tmp_path, models):
    other = load_model(str(build_checkpoint(tmp_path / "other", extra_tokens=["<think>", "</think>"])), name="other")
    with pytest.raises(RelaykitError, match="do not share a tokenizer.*vocabularies differ"):
        check_same_tokenizer(models[("llama", "large")], other)
    with pytest.raises(RelaykitError, match="do not share a tokenizer"):
        get_strategy("speculative")({"large": models[("llama", "large")], "small": other})


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(RelaykitError, match="no such model"):
        load_model(str(tmp_path / "absent"))
    with pytest.raises(RelaykitError, match="no such GGUF file"):
        load_model(str(tmp_path / "absent.gguf"))
    with pytest.raises(RelaykitError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(RelaykitError, match="no installed Python package"):
        load_model("pkg:surely_not_a_package_here")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    folder = build_checkpoint(tmp_path / "corrupt")
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(RelaykitError, match="could not load model"):
        load_model(str(folder))
    bad_config = build_checkpoint(tmp_path / "bad-config")
    (bad_config / "config.json").write_text("{not json")
    with pytest.raises(RelaykitError, match="could not load model"):
        load_model(str(bad_config))


def test_pickle_weights_are_refused_by_default(tmp_path):
    folder = build_checkpoint(tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(RelaykitError, match="pickle"):
        load_model(str(folder))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relaykit.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_errors_have_no_traceback(tmp_path, checkpoints):
    done = run_cli("generate", "--large", str(tmp_path / "nothing"), "hi")
    assert done.returncode == 2 and "no such model" in done.stderr and "Traceback" not in done.stderr
    corrupt = build_checkpoint(tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"garbage")
    done = run_cli("generate", "--large", str(corrupt), "hi")
    assert done.returncode == 2 and "could not load model" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("generate", "--large", str(checkpoints[("llama", "large")]), "--top-p", "0", "hi")
    assert done.returncode == 2 and "top-p" in done.stderr
    other = build_checkpoint(tmp_path / "other", extra_tokens=["<call>"])
    done = run_cli("generate", "--strategy", "speculative", "--large", str(checkpoints[("llama", "large")]),
                   "--small", str(other), "hi")
    assert done.returncode == 2 and "do not share a tokenizer" in done.stderr
    done = run_cli("train", "toy", "--refine-large", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "not a checkpoint folder" in done.stderr and not (tmp_path / "out").exists()
    done = run_cli("eval", "--strategy", "fusionroute", "--expert", "add", "--dataset", "toy:domains:test")
    assert done.returncode == 2 and "--expert takes NAME=PATH" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("eval", "--strategy", "fusionroute", "--router", str(checkpoints[("llama", "large")]),
                   "--expert", f"a={checkpoints[('llama', 'small')]}", "--large", str(checkpoints[("llama", "large")]))
    assert done.returncode == 2 and "is not a router" in done.stderr and "Traceback" not in done.stderr


def test_cli_generate_json(checkpoints):
    done = run_cli(
        "generate", "--strategy", "speculative", "--k", "3", "--max-new-tokens", "12", "--json",
        "--large", str(checkpoints[("llama", "large")]), "--small", str(checkpoints[("llama", "small")]), "ab", "cde",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    for result in lines:
        assert len(result["token_ids"]) == len(result["provenance"]) <= 12
        for role in ("large", "small"):
            fields = {"prefill_tokens", "decode_tokens", "forward_calls", "seconds", "flops"}
            assert set(result["usage"][role]) >= fields


def test_engine_and_dtype_choices(checkpoints, tmp_path):
    from relaykit.models.kv import make_policy
    from relaykit.models.loading import auto_dtype
    from relaykit.runtime.local_runner import LocalRunner

    folder = str(checkpoints[("llama", "large")])
    tiny = load_model(folder)
    assert tiny.engine == "native" and tiny.dtype == "float32"  # auto: a tiny model stays in float32
    assert auto_dtype("cpu", 1_000) == torch.float32 and auto_dtype("cuda", 1_000) == torch.bfloat16
    forced = load_model(folder, engine="hf")
    assert forced.engine == "hf" and isinstance(LocalRunner(forced).engine, HFEngine)
    with pytest.raises(RelaykitError, match="native engine"):
        LocalRunner(forced, policy=make_policy("rpc"))
    with pytest.raises(RelaykitError, match="reads .gguf files"):
        load_model(folder, engine="llamacpp")
    with pytest.raises(RelaykitError, match="unknown engine"):
        load_model(folder, engine="vllm")
    described = load_model(folder, dtype="bfloat16").describe()
    assert described == {"source": folder, "engine": "native", "dtype": "bfloat16", "parameters": tiny.parameters}


def test_packed_bfloat16_products_equal_f_linear_row_by_row(checkpoints):
    """bfloat16 weights are packed for oneDNN once (F.linear reorders them on every call): the same
    numbers as F.linear, and each row's the same alone as in a batch."""
    from relaykit.models.native.linear import PackedLinear, packs_bfloat16
    from relaykit.runtime.local_runner import LocalRunner

    if not packs_bfloat16(torch.bfloat16, torch.device("cpu")):
        pytest.skip("this CPU's oneDNN has no bfloat16")
    engine = LocalRunner(load_model(str(checkpoints[("llama", "large")]), dtype="bfloat16")).engine
    layer = engine.weights.layers[0]
    assert isinstance(layer.gate_up, PackedLinear) and isinstance(engine.weights.head, PackedLinear)
    mlp = engine.model.model.layers[0].mlp
    weight = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()  # the gate/up weight the layer packed
    x = torch.randn(3, 5, weight.shape[1], generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.inference_mode():
        product = layer.gate_up.forward(x)
        assert torch.equal(product, torch.nn.functional.linear(x, weight))
        assert torch.equal(product[1:2, 2:3], layer.gate_up.forward(x[1:2, 2:3]))
