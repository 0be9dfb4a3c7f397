"""Offline calibration of RelayGen's switch cues and segment check (no training)."""

from .check import calibrate_check
from .cues import calibrate, cue_statistics, run_calibrate_command, summary, write_calibration

__all__ = ["calibrate", "calibrate_check", "cue_statistics", "run_calibrate_command", "summary", "write_calibration"]
