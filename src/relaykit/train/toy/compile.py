"""torch.compile for training, where the machine can run it."""

from __future__ import annotations

import logging
import os
import shutil

import torch
from transformers import LlamaForCausalLM

log = logging.getLogger(__name__)


def compiled(model: LlamaForCausalLM):
    """``torch.compile(model)``, or the model itself on a CPU without a C++ compiler (Inductor's
    CPU backend needs one)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    if on_cpu and not any(shutil.which(c) for c in (os.environ.get("CXX"), "g++", "clang++") if c):
        log.warning("no C++ compiler found: training without torch.compile (a few percent slower)")
        return model
    return torch.compile(model)
