"""Benchmark: `relaykit serve` on loopback, on the shipped toy pair, under concurrent streaming
clients against the same requests one at a time.

The app runs in a process of its own (as a deployed server would: the clients' parsing does not
share its interpreter), served by uvicorn on a free 127.0.0.1 port; the clients run in this one.
Request i asks strategy `large`, `speculative`, `relaygen`, `small` in turn, on the i-th distinct
`toy:test` question, through `/v1/chat/completions` with temperature 0 and --max-tokens.

- Concurrent: --clients streaming clients (asyncio + httpx2, the HTTP client of the `openai`
  package), all sent at once, with `stream_options.include_usage`. Per request: time to first
  content token (TTFT, from sending), inter-token latency (ITL: the gap between two content
  chunks divided by the tokens in the later one, counted by encoding its text with the toy
  tokenizer, one sample per token) and end-to-end time (to `data: [DONE]`). An error is a
  non-200 status, an error event, an exception, a missing usage chunk or [DONE], or a request
  still running at --timeout.
- Sequential: the same requests one at a time, not streamed, against the same server.
- Direct (--direct): the same requests submitted at once to a fresh in-process `Session`, no HTTP;
  what the server could reach if HTTP and the event loop cost nothing.

Throughput = completion tokens (from the usage the server returns) / seconds from the first send
to the last completion. Everything is bounded by --timeout; the benchmark stops by itself.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from dataclasses import dataclass, field

import httpx2
import numpy as np
import torch

from pairs import shipped_pair
from relaykit import api
from relaykit.decoding.stopping import StopConfig
from relaykit.runtime import Session
from relaykit.serve import create_app, serving
from relaykit.serve.service import Service
from relaykit.toyworld import load_split

STRATEGIES = ("large", "speculative", "relaygen", "small")


@dataclass
class Outcome:
    """What one request measured; `error` is None when it succeeded."""

    tokens: int = 0  # completion tokens, from the usage the server returned
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)  # one sample per token after the first chunk
    end_to_end: float | None = None
    finished_at: float | None = None  # perf_counter when the response ended
    error: str | None = None


def serve_in_child(threads: int, device: str, dtype: str, channel) -> None:
    """The server's process: the shipped pair behind the app; sends its URL, serves until told."""
    torch.set_num_threads(threads)
    with serving(create_app(shipped_pair(device, dtype))) as url:
        channel.send(url)
        channel.recv()


def request_bodies(count: int, max_tokens: int) -> list[dict]:
    """Chat requests on distinct toy:test questions, strategies in turn."""
    questions = [problem.question for problem in load_split("test", count)]
    return [{"model": STRATEGIES[i % len(STRATEGIES)], "messages": [{"role": "user", "content": question}],
             "temperature": 0, "max_tokens": max_tokens} for i, question in enumerate(questions)]


async def stream_one(client: httpx2.AsyncClient, url: str, body: dict, count_tokens) -> Outcome:
    """One streamed chat completion, timed chunk by chunk."""
    outcome, chunks, done = Outcome(), [], False  # chunks: (arrival, content text)
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                outcome.error = f"status {response.status_code}: {(await response.aread())[:200]!r}"
                return outcome
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                arrived, payload = time.perf_counter(), line[len("data: "):]
                if payload == "[DONE]":
                    done = True
                    break
                event = json.loads(payload)
                if "error" in event:
                    outcome.error = f"error event: {event['error'].get('message')}"
                    return outcome
                if event.get("usage"):
                    outcome.tokens = event["usage"]["completion_tokens"]
                for choice in event["choices"]:
                    if text := choice["delta"].get("content"):
                        chunks.append((arrived, text))
    except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the run
        outcome.error = f"{type(error).__name__}: {error}"
        return outcome
    if not done or not outcome.tokens:
        outcome.error = "no [DONE]" if not done else "no usage chunk"
        return outcome
    outcome.finished_at = time.perf_counter()
    outcome.end_to_end = outcome.finished_at - sent
    if chunks:
        outcome.ttft = chunks[0][0] - sent
        for (before, _), (arrived, text) in zip(chunks, chunks[1:]):
            tokens = max(1, count_tokens(text))
            outcome.itl += [(arrived - before) / tokens] * tokens
    return outcome


async def run_concurrent(url: str, bodies: list[dict], count_tokens, timeout: float) -> tuple[list[Outcome], float]:
    """All requests streamed at once; their outcomes (unfinished ones at `timeout` are errors)
    and the time of the first send."""
    limits = httpx2.Limits(max_connections=len(bodies) + 4, max_keepalive_connections=len(bodies) + 4)
    async with httpx2.AsyncClient(timeout=timeout, limits=limits) as client:
        started = time.perf_counter()
        tasks = [asyncio.create_task(stream_one(client, url, body, count_tokens)) for body in bodies]
        _, unfinished = await asyncio.wait(tasks, timeout=timeout)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
    return [Outcome(error="timed out") if task in unfinished else task.result() for task in tasks], started


def run_sequential(url: str, bodies: list[dict], deadline: float) -> tuple[list[Outcome], float]:
    """The requests one at a time, not streamed; those not sent by `deadline` are errors."""
    outcomes = []
    with httpx2.Client() as client:
        started = time.perf_counter()
        for body in bodies:
            left = deadline - time.perf_counter()
            if left <= 0:
                outcomes.append(Outcome(error="timed out"))
                continue
            sent, outcome = time.perf_counter(), Outcome()
            try:
                response = client.post(url + "/v1/chat/completions", json=body, timeout=left)
                if response.status_code == 200:
                    outcome.tokens = response.json()["usage"]["completion_tokens"]
                    outcome.finished_at = time.perf_counter()
                    outcome.end_to_end = outcome.finished_at - sent
                else:
                    outcome.error = f"status {response.status_code}: {response.text[:200]}"
            except Exception as error:  # noqa: BLE001 - every failure is counted, none stops the run
                outcome.error = f"{type(error).__name__}: {error}"
            outcomes.append(outcome)
    return outcomes, started


def run_direct(pair: dict, bodies: list[dict]) -> tuple[int, float]:
    """The requests submitted at once to a fresh Session stepped in this thread, with the
    prompts and budgets the server would use: (completion tokens, seconds)."""
    strategies = {name: api.build_strategy(name, pair) for name in STRATEGIES}
    jobs = []
    for body in bodies:
        strategy = strategies[body["model"]]
        jobs.append((Service.chat_prompt(strategy, body["messages"]), strategy))
    prompt, strategy = jobs[0]
    Session(pair).submit(strategy, prompt, stop=StopConfig(max_new_tokens=8)).result()  # warm-up
    session = Session(pair)
    started = time.perf_counter()
    handles = [session.submit(strategy, prompt, stop=StopConfig(max_new_tokens=body["max_tokens"]))
               for (prompt, strategy), body in zip(jobs, bodies)]
    tokens = sum(len(handle.result().token_ids) for handle in handles)
    return tokens, time.perf_counter() - started


def throughput(outcomes: list[Outcome], started: float) -> tuple[int, float]:
    """(completion tokens, tokens/s from `started` to the last completion) of the successes."""
    done = [o for o in outcomes if o.error is None]
    if not done:
        return 0, 0.0
    tokens = sum(o.tokens for o in done)
    return tokens, tokens / (max(o.finished_at for o in done) - started)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64, help="concurrent streaming clients (= requests)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the whole run may take")
    parser.add_argument("--direct", action="store_true", help="also run the requests on an in-process Session")
    parser.add_argument("--device", default="cpu", help="where the pair runs (cuda on a GPU machine)")
    parser.add_argument("--dtype", default="auto",
                        help="the pair's dtype (auto: float32 for the toy pair on a CPU, bfloat16 on a GPU)")
    args = parser.parse_args()
    deadline = time.perf_counter() + args.timeout
    torch.set_num_threads(args.threads)
    pair = shipped_pair(args.device, args.dtype)
    tokenizer = pair["large"].tokenizer

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    bodies = request_bodies(args.clients, args.max_tokens)
    spawn = multiprocessing.get_context("spawn")
    channel, child_end = spawn.Pipe()
    server = spawn.Process(target=serve_in_child, args=(args.threads, args.device, args.dtype, child_end), daemon=True)
    server.start()
    try:
        if not channel.poll(min(180.0, args.timeout)):
            raise SystemExit("the server did not start")
        url = channel.recv()
        with httpx2.Client(timeout=max(1.0, deadline - time.perf_counter())) as client:  # warm-up: builds each strategy
            for name in STRATEGIES:
                client.post(url + "/v1/chat/completions", json={**bodies[0], "model": name, "max_tokens": 8})
        left = deadline - time.perf_counter()
        concurrent, started = asyncio.run(run_concurrent(url, bodies, count_tokens, left))
        tokens, rate = throughput(concurrent, started)
        sequential, started = run_sequential(url, bodies, deadline)
        sequential_tokens, sequential_rate = throughput(sequential, started)
    finally:
        channel.send("stop")
        server.join(30)

    succeeded = [o for o in concurrent if o.error is None]
    errors = [o.error for o in concurrent + sequential if o.error is not None]
    itl = [gap for o in succeeded for gap in o.itl]
    figures = {
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "device": args.device,
        "dtype": pair["large"].dtype,
        "errors": len(errors),
        "ttft_p50_s": percentile([o.ttft for o in succeeded if o.ttft is not None], 50),
        "ttft_p99_s": percentile([o.ttft for o in succeeded if o.ttft is not None], 99),
        "itl_p50_s": percentile(itl, 50),
        "itl_p99_s": percentile(itl, 99),
        "e2e_p50_s": percentile([o.end_to_end for o in succeeded], 50),
        "e2e_p99_s": percentile([o.end_to_end for o in succeeded], 99),
        "completion_tokens": tokens,
        "sequential_completion_tokens": sequential_tokens,
        "throughput_tokens_per_s": rate,
        "sequential_tokens_per_s": sequential_rate,
        "throughput_over_sequential": rate / sequential_rate if sequential_rate else None,
    }
    if args.direct:
        direct_tokens, seconds = run_direct(pair, bodies)
        direct_rate = direct_tokens / seconds
        figures |= {"direct_tokens_per_s": direct_rate, "throughput_over_direct": rate / direct_rate}

    for error in sorted(set(errors))[:5]:
        print("error:", error)
    print(f"{args.clients} streaming clients: {len(succeeded)} answered, {tokens} tokens at {rate:.0f} tok/s; "
          f"TTFT p50 {figures['ttft_p50_s'] or 0:.3f} s, p99 {figures['ttft_p99_s'] or 0:.3f} s; "
          f"ITL p50 {(figures['itl_p50_s'] or 0) * 1000:.1f} ms, p99 {(figures['itl_p99_s'] or 0) * 1000:.1f} ms")
    print(f"one at a time: {sequential_tokens} tokens at {sequential_rate:.0f} tok/s; "
          f"concurrent / sequential = {figures['throughput_over_sequential'] or 0:.2f}")
    if args.direct:
        print(f"direct Session, no HTTP: {figures['direct_tokens_per_s']:.0f} tok/s")
    rounded = {key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}
    print(json.dumps({"benchmark": "serve", **rounded}))


if __name__ == "__main__":
    main()
