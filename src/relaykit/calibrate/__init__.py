"""Offline calibration of RelayGen's switch cues (no training)."""

from .cues import calibrate, cue_statistics, run_calibrate_command, summary, write_calibration

__all__ = ["calibrate", "cue_statistics", "run_calibrate_command", "summary", "write_calibration"]
