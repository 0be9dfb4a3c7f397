"""Crash isolation for tests marked `isolated` (loaded by tests/conftest.py): at the first of them,
the parent runs all of them in one child `python -m pytest NODEIDS`, where this plugin appends a JSON
line to a log at each test's start, report and finish; the parent then reports each test's own
outcome from the log. If the child dies from a signal (a segfault in llama.cpp), the test that had
started and not finished fails with the signal named, and the tests not reached run in a new child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

LOG = "RELAYKIT_ISOLATION_LOG"  # set in the child: where it writes its JSON lines
REPORTS = pytest.StashKey[dict]()


class ChildLog:
    """The child's side: writes the log."""

    def __init__(self, config):
        self.config = config

    def write(self, entry: dict) -> None:
        with open(os.environ[LOG], "a") as log:
            log.write(json.dumps(entry) + "\n")

    def pytest_runtest_logstart(self, nodeid):
        self.write({"start": nodeid})

    def pytest_runtest_logreport(self, report):
        self.write({"report": self.config.hook.pytest_report_to_serializable(config=self.config, report=report)})

    def pytest_runtest_logfinish(self, nodeid):
        self.write({"finish": nodeid})


def pytest_configure(config):
    if LOG in os.environ:
        config.pluginmanager.register(ChildLog(config))


def run_children(config, items: list) -> dict[str, list]:
    """Each item's reports, from as many children as crashes need."""
    by_id = {item.nodeid: item for item in items}
    reports = {nodeid: [] for nodeid in by_id}
    pending = dict.fromkeys(by_id)
    while pending:
        log = Path(tempfile.mkstemp(prefix="isolated-", suffix=".jsonl")[1])
        path = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]  # for `-p isolation`
        env = {**os.environ, LOG: str(log), "PYTHONPATH": os.pathsep.join(path)}
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", __name__, "-p", "no:cacheprovider",
                                *pending],
                               cwd=config.rootpath, env=env, capture_output=True, text=True)
        started = None
        for entry in map(json.loads, log.read_text().splitlines()):
            if "start" in entry:
                started = entry["start"]
                pending.pop(started, None)
            elif "report" in entry:
                report = config.hook.pytest_report_from_serializable(config=config, data=entry["report"])
                if isinstance(report.longrepr, list):  # a skip's (path, line, reason), a list after JSON
                    report.longrepr = tuple(report.longrepr)
                reports[started].append(report)
            else:
                started = None
        log.unlink()
        if started is None and not pending:
            break
        if child.returncode < 0:
            number = -child.returncode
            died = (f"died from {signal.Signals(number).name} (signal {number}) in this test: "
                    "a crash of native code (llama.cpp)")
        else:
            died = f"exited with code {child.returncode} before this test finished"
        # the crash's Python traceback (faulthandler), else pytest's own report
        output = child.stderr[:3000] or child.stdout[-3000:]
        # the test that was running; else (a crash between tests, or a child that ran none) the rest
        for nodeid in [started] if started else list(pending):
            item = by_id[nodeid]
            when = {"setup": "call", "call": "teardown"}.get(reports[nodeid][-1].when if reports[nodeid] else None,
                                                             "setup")
            message = f"the process {died}\n\nits output:\n{output}"
            reports[nodeid].append(pytest.TestReport(nodeid, item.location, dict.fromkeys(item.keywords, 1), "failed",
                                                     message, when))
            pending.pop(nodeid, None)
    return reports


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if LOG in os.environ or not item.get_closest_marker("isolated"):
        return None
    if REPORTS not in item.config.stash:
        marked = [other for other in item.session.items if other.get_closest_marker("isolated")]
        item.config.stash[REPORTS] = run_children(item.config, marked)
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in item.config.stash[REPORTS][item.nodeid]:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
