"""Prometheus text metrics: requests by strategy and status, latency histograms (time to first
token, between streamed tokens, end to end), tokens written by each model, drafts checked and
accepted by strategy and model (with the accepted lengths' histogram), running and waiting
requests, KV bytes in use."""

from __future__ import annotations

import bisect
import threading
from collections import Counter

from ..runtime.scheduler import Scheduler

ACCEPTED_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)  # drafts one check accepted
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds


class Histogram:
    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)  # the last: above every bucket
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        return out + [f"{name}_sum {self.total}", f"{name}_count {running}"]


class Metrics:
    """What the server counts; `render` reads the scheduler's gauges as well."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # (path, strategy, status)
        self.tokens: Counter = Counter()  # model -> tokens written
        self.drafts: Counter = Counter()  # (strategy, model, "checks" | "drafted" | "accepted")
        self.accepted: dict[tuple[str, str], list[int]] = {}  # (strategy, model) -> checks per ACCEPTED_BUCKETS
        self.latency = {"time_to_first_token": Histogram(), "inter_token": Histogram(), "end_to_end": Histogram()}

    def request(self, path: str, strategy: str, status: int) -> None:
        with self.lock:
            self.requests[(path, strategy, status)] += 1

    def observe(self, kind: str, seconds: float, times: int = 1) -> None:
        with self.lock:
            for _ in range(times):
                self.latency[kind].observe(seconds)

    def written(self, strategy: str, results) -> None:
        with self.lock:
            for result in results:
                self.tokens.update(result.provenance)
                for role, usage in result.usage.items():
                    if not usage.checks:
                        continue
                    for key in ("checks", "drafted", "accepted"):
                        self.drafts[(strategy, role, key)] += getattr(usage, key)
                    counts = self.accepted.setdefault((strategy, role), [0] * (len(ACCEPTED_BUCKETS) + 1))
                    for length, checks in usage.accepted_lengths.items():
                        counts[bisect.bisect_left(ACCEPTED_BUCKETS, length)] += checks

    def render(self) -> str:
        """The Prometheus text exposition; waits for the scheduler's step (call it off the event loop)."""
        stats = self.scheduler.stats()
        running, waiting, kv = stats.running, stats.waiting, stats.kv_bytes
        lines = ["# HELP relaykit_requests_total HTTP requests by path, strategy and status.",
                 "# TYPE relaykit_requests_total counter"]
        with self.lock:
            for (path, strategy, status), count in sorted(self.requests.items()):
                lines.append(f'relaykit_requests_total{{path="{path}",strategy="{_escape(strategy)}",'
                             f'status="{status}"}} {count}')
            lines += ["# HELP relaykit_tokens_total Tokens written, by the model that wrote them.",
                      "# TYPE relaykit_tokens_total counter"]
            lines += [f'relaykit_tokens_total{{model="{model}"}} {count}'
                      for model, count in sorted(self.tokens.items())]
            lines += ["# HELP relaykit_drafts_total Drafts checked: checks, drafts written and drafts accepted, "
                      "by strategy and checking model.", "# TYPE relaykit_drafts_total counter"]
            lines += [f'relaykit_drafts_total{{strategy="{_escape(strategy)}",model="{model}",kind="{kind}"}} {count}'
                      for (strategy, model, kind), count in sorted(self.drafts.items())]
            lines += ["# HELP relaykit_accepted_drafts Drafts one check accepted, by strategy and checking model.",
                      "# TYPE relaykit_accepted_drafts histogram"]
            for (strategy, model), counts in sorted(self.accepted.items()):
                labels, running = f'strategy="{_escape(strategy)}",model="{model}"', 0
                for bound, count in zip((*map(str, ACCEPTED_BUCKETS), "+Inf"), counts):
                    running += count
                    lines.append(f'relaykit_accepted_drafts_bucket{{{labels},le="{bound}"}} {running}')
                accepted = self.drafts[(strategy, model, "accepted")]
                lines += [f"relaykit_accepted_drafts_sum{{{labels}}} {accepted}",
                          f"relaykit_accepted_drafts_count{{{labels}}} {running}"]
            for kind, histogram in self.latency.items():
                name = f"relaykit_{kind}_seconds"
                lines += [f"# HELP {name} {kind.replace('_', ' ').capitalize()} latency.", f"# TYPE {name} histogram"]
                lines += histogram.lines(name)
        lines += ["# HELP relaykit_requests_running Requests in the scheduler (children included).",
                  "# TYPE relaykit_requests_running gauge", f"relaykit_requests_running {running}",
                  "# HELP relaykit_requests_waiting Requests submitted but not yet admitted.",
                  "# TYPE relaykit_requests_waiting gauge", f"relaykit_requests_waiting {waiting}",
                  "# HELP relaykit_kv_bytes Key/value cache bytes in use, by model.", "# TYPE relaykit_kv_bytes gauge"]
        lines += [f'relaykit_kv_bytes{{model="{role}"}} {size}' for role, size in kv.items()]
        return "\n".join(lines) + "\n"


class CountRequests:
    """ASGI middleware: count each /v1/ request by path, strategy (set by the endpoint in
    `request.state.strategy`) and status. Pure ASGI, so streamed responses pass untouched."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.request(scope["path"], scope.get("state", {}).get("strategy", ""), message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not started:
                self.metrics.request(scope["path"], scope.get("state", {}).get("strategy", ""), 500)
            raise


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
