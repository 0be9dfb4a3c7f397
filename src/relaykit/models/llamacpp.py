"""The llama.cpp engine: a GGUF model runs its weights as shipped (quantised) through
llama-cpp-python's low-level API, behind the runner's engine interface. A runner's rows are
llama.cpp sequences of one context: catch-up feeds each sequence its new tokens in one batch,
logits come back for the last k positions asked, rollback removes KV cells by position and fork
copies a sequence (llama.cpp shares the copied cells).

Needs `pip install 'relaykit[llamacpp]'` (llama-cpp-python; it compiles llama.cpp on install).

On a CPU with AMX, models load without llama.cpp's extra buffer types (`use_extra_bufts = False`):
there llama.cpp repacks weights for its AMX kernels, and the first decode segfaults (upstream
llama.cpp issue #20824, a crash in `ggml_backend_amx_mul_mat`). As measured for this project
(llama-cpp-python 0.3.36, a Xeon with AVX-512 BF16 and AMX, 2 threads; shared engine notes),
SmolLM2-135M Q4_1 with the defaults crashes in its first decode, and with `use_extra_bufts = False`
it decodes at 65-66 tokens/s. ggml reads no
setting that turns off AMX alone at run time (AMX is a build option, GGML_AMX_* or GGML_NATIVE on an
AMX CPU), and for Q4_1 weights the other extra buffer type (CPU_REPACK) has no layout: on an AMD EPYC
without AMX, llama.cpp reports that none of the model's tensors can use it, and it decodes as
fast with the extra buffer types off as on. Without AMX the default stays: CPU_REPACK has faster
layouts for other quantisations (Q4_0, Q4_K, Q8_0, ...).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import torch

from ..errors import RelaykitError
from .engine import UnmeasuredKV
from .kv import KVPolicy
from .model import Model

# A context holds every row of a runner: at most MAX_ROWS sequences and, over all of them, the
# model's training context or CONTEXT_TOKENS KV cells (tokens), whichever is fewer; llama.cpp
# allocates them when the context is made (SmolLM2-135M: 23 KB a token).
MAX_ROWS = 64
CONTEXT_TOKENS = 16384
BATCH_TOKENS = 512  # tokens per llama_decode call (a longer feed is split)


def llama_cpp_module():
    """llama-cpp-python, or a clear error saying how to install it."""
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError as error:
        raise RelaykitError("the llama.cpp engine needs llama-cpp-python: pip install 'relaykit[llamacpp]' "
                            f"(it compiles llama.cpp, a few minutes) ({error})") from None
    _logger.set_verbose(False)
    return llama_cpp


def cpu_has_amx() -> bool:
    """Whether the CPU reports AMX (Linux's /proc/cpuinfo flags)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"amx_tile", "amx_int8", "amx_bf16"})


def use_extra_bufts() -> bool:
    """Whether models load with llama.cpp's extra buffer types (repacked weights): not with AMX."""
    return not cpu_has_amx()


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class LlamaCppModel(Model):
    """A GGUF model loaded by llama.cpp: `handle` is its llama_model, shared by every runner's
    context; `hf` is None. `config` holds the sizes FLOP accounting reads."""

    handle: object = None
    settings: SimpleNamespace = field(default_factory=SimpleNamespace)
    description: str = ""
    threads: int = 1

    policy_hint: ClassVar[str] = " (--engine native loads a .gguf file's weights for it)"

    @property
    def config(self):
        return self.settings

    @property
    def engine(self) -> str:
        return "llamacpp"

    @property
    def engine_type(self) -> type[LlamaCppEngine]:
        return LlamaCppEngine

    @property
    def native(self) -> bool:
        return False

    @property
    def dtype(self) -> str:
        return self.description  # e.g. "llama 135M Q4_1": the file's own weight format

    @property
    def eos_token_ids(self) -> list[int]:
        return [self.tokenizer.eos_token_id]


def load_llamacpp(path: Path, name: str, tokenizer, threads: int) -> LlamaCppModel:
    """Load a .gguf file's weights with llama.cpp (on the CPU); `tokenizer` is the file's own,
    read by transformers."""
    llama_cpp = llama_cpp_module()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    if not use_extra_bufts() and hasattr(params, "use_extra_bufts"):  # an older llama-cpp-python lacks the field
        params.use_extra_bufts = False
    handle = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not handle:
        raise RelaykitError(f"llama.cpp could not load {path}")
    buffer = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(handle, buffer, len(buffer))
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(handle))
    hidden, heads = llama_cpp.llama_model_n_embd(handle), llama_cpp.llama_model_n_head(handle)
    settings = SimpleNamespace(
        model_type="gguf", num_hidden_layers=llama_cpp.llama_model_n_layer(handle), hidden_size=hidden,
        num_attention_heads=heads, head_dim=hidden // heads, vocab_size=vocab,
        max_position_embeddings=llama_cpp.llama_model_n_ctx_train(handle),
    )
    if len(tokenizer) != vocab:
        raise RelaykitError(f"{path}: its tokenizer has {len(tokenizer)} tokens, its weights {vocab}")
    total = int(llama_cpp.llama_model_n_params(handle))
    return LlamaCppModel(name, str(path), None, tokenizer, total, total - vocab * hidden, handle=handle,
                         settings=settings, description=buffer.value.decode(), threads=threads)


class LlamaCppEngine(UnmeasuredKV):
    """The `Engine` protocol over one llama.cpp context; its KV cells are not measured (the KV byte
    figures are 0)."""

    runs_kv_policies: ClassVar[bool] = False

    def __init__(self, model: LlamaCppModel, policy: KVPolicy | None = None):
        llama_cpp = self.llama_cpp = llama_cpp_module()
        params = llama_cpp.llama_context_default_params()
        self.cells = min(CONTEXT_TOKENS, model.config.max_position_embeddings)
        params.n_ctx, params.n_batch, params.n_ubatch = self.cells, BATCH_TOKENS, BATCH_TOKENS
        params.n_seq_max, params.kv_unified = MAX_ROWS, True
        params.n_threads = params.n_threads_batch = model.threads
        # flash attention: a position's logits are then the same bit for bit whether it is fed alone or
        # in a chunk of a sequence (plain attention moves them by up to ~0.9), so speculative greedy
        # equals single greedy; llama-cpp-python's `Llama` needs flash_attn=True to compute the same
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.context = llama_cpp.llama_init_from_model(model.handle, params)
        if not self.context:
            raise RelaykitError(f"llama.cpp could not make a context for {model.name}")
        self.memory = llama_cpp.llama_get_memory(self.context)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.vocab = model.config.vocab_size
        self.lengths: list[int] = []
        self.name = model.name

    def __del__(self):
        try:
            self.llama_cpp.llama_batch_free(self.batch)
            self.llama_cpp.llama_free(self.context)
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def add_rows(self, count: int) -> None:
        if len(self.lengths) + count > MAX_ROWS:
            raise RelaykitError(f"the llama.cpp engine runs at most {MAX_ROWS} sequences of {self.name} at once")
        self.lengths += [0] * count

    def keep_rows(self, rows: list[int]) -> None:
        """Rows `rows` (ascending) become rows 0.. in order; the others are dropped."""
        for target, source in enumerate(rows):
            if source != target:
                self.copy_row(source, target)
        for row in range(len(rows), len(self.lengths)):
            self.clear_row(row)
        del self.lengths[len(rows):]

    def copy_row(self, source: int, target: int) -> None:
        self.llama_cpp.llama_memory_seq_rm(self.memory, target, -1, -1)
        self.llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)
        self.lengths[target] = self.lengths[source]

    move_row = copy_row  # the source row is cleared or reused afterwards

    def clear_row(self, row: int) -> None:
        self.llama_cpp.llama_memory_seq_rm(self.memory, row, -1, -1)
        self.lengths[row] = 0

    def truncate(self, row: int, length: int) -> None:
        if length < self.lengths[row]:
            self.llama_cpp.llama_memory_seq_rm(self.memory, row, length, -1)
            self.lengths[row] = length

    def forward(self, tokens: list[list[int]], positions: list[int], wanted: list[int]) -> torch.Tensor:
        """As `Engine.forward`: logits [F, K, V] of the last K fed tokens of each fed row."""
        last_k = max(wanted)
        fed = [b for b, row_tokens in enumerate(tokens) if row_tokens]
        out = np.zeros((len(fed), last_k, self.vocab), dtype=np.float32)
        entries = []  # (row, position, token, where its logits go or None)
        for slot, b in enumerate(fed):
            n = len(tokens[b])
            for j, token in enumerate(tokens[b]):
                entries.append((b, positions[b] + j, token, (slot, last_k - n + j) if j >= n - last_k else None))
        batch = self.batch
        for start in range(0, len(entries), BATCH_TOKENS):
            chunk = entries[start : start + BATCH_TOKENS]
            batch.n_tokens = len(chunk)
            for i, (row, position, token, target) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0] = row
                batch.logits[i] = target is not None
            code = self.llama_cpp.llama_decode(self.context, batch)
            if code != 0:
                reason = "its KV cells are full" if code == 1 else f"llama_decode returned {code}"
                raise RelaykitError(f"llama.cpp could not run a forward of {self.name}: {reason} "
                                    f"({self.cells} tokens over at most {MAX_ROWS} sequences)")
            for i, (_, _, _, target) in enumerate(chunk):
                if target is not None:
                    logits = self.llama_cpp.llama_get_logits_ith(self.context, i)
                    out[target] = np.ctypeslib.as_array(logits, shape=(self.vocab,))
        for b in fed:
            self.lengths[b] += len(tokens[b])
        return torch.from_numpy(out)
