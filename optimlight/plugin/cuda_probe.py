"""CUDA's availability check, which torch's optimizers make in every `step()`, without a failing NVML load each time.

Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when it is imported, so that `torch.cuda.is_available()` asks NVML
and does not initialize CUDA before a fork. Where NVML cannot be loaded (a CUDA build of torch on a machine without
an NVIDIA driver: the CPU machines this project runs on), torch tries to load libnvidia-ml again at every call and
then falls back to the CUDA runtime's device count anyway. Adam, AdamW, NAdam, RMSprop and the others call
`is_available()` in every step (their CUDA-graph capture check), so the failing load is paid in every step
(docs/explanation/benchmarks.md has the timings).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def nvml_count() -> int | None:
    """NVML's count of the visible GPUs, -1 when NVML cannot answer (torch's own probe), None for a torch without
    that probe (nothing is changed then)."""
    probe = getattr(torch.cuda, "_device_count_nvml", None)
    return probe() if probe is not None else None


def skip_failing_nvml_check() -> bool:
    """Turn the NVML-based check off where NVML cannot answer; torch then asks the CUDA runtime directly, as it does
    today after each failed load. Where NVML answers (a GPU machine), nothing changes. True when it turned it off."""
    if os.environ.get(NVML_CHECK) != "1" or not torch.backends.cuda.is_built() or nvml_count() != -1:
        return False
    os.environ[NVML_CHECK] = "0"
    log.debug("%s=0: NVML cannot be loaded here, so torch.cuda.is_available() asks the CUDA runtime", NVML_CHECK)
    return True
