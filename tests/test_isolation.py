"""Crash isolation (tests/isolation.py): a test marked `isolated` that dies from a signal fails with
the signal named, the isolated tests after it still run (or skip), and pytest itself survives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

THROWAWAY = '''
import os
import signal

import pytest


@pytest.mark.isolated
def test_crashes():
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.isolated
def test_after_the_crash():
    assert True


@pytest.mark.isolated
@pytest.mark.skipif(True, reason="a skip condition holds")
def test_skipped():
    assert False


def test_plain():
    assert True
'''


def test_a_crash_fails_its_test_and_the_others_still_run(tmp_path):
    (tmp_path / "test_throwaway.py").write_text(THROWAWAY)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "isolation", "-p", "no:cacheprovider",
                          "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_throwaway.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 2 passed, 1 skipped" in run.stdout and "SIGSEGV (signal 11)" in run.stdout, run.stdout
    assert "test_throwaway.py::test_crashes" in run.stdout.split("short test summary")[-1]
