"""Which dtype to run a model in on this machine.

``dtype="auto"`` in vLLM means the checkpoint's dtype. On a CPU without native bf16
instructions a bf16 checkpoint then runs every matrix product through emulation: on
an AVX2-only AMD EPYC a 64x576 by 576x1536 linear layer ran at 8.4 GFLOP/s in bf16
against 63 GFLOP/s in float32, and the bundled SmolLM2-135M generated 4.2x fewer
tokens per second (see ``benchmarks/engine_throughput.py``). ttc's ``"auto"`` therefore
means: the checkpoint's dtype on GPUs and on CPUs with native bf16 (x86 AVX-512 BF16
or AMX-BF16, Arm's BF16 extension); float32 on CPUs without it when the checkpoint is
half precision (bf16 or fp16: fp16 is no faster there). An explicit dtype always wins.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("ttc.engines")

DTYPES = ("auto", "float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
#: /proc/cpuinfo flags that mean bf16 matrix products run in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``flags`` on x86, ``Features`` on Arm), from /proc/cpuinfo;
    empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: Iterable[str] | None = None) -> bool:
    """True when the CPU computes bf16 matrix products in hardware (AVX-512 BF16, AMX-BF16,
    Arm BF16). ``flags`` defaults to :func:`cpu_flags`; on macOS (Apple silicon) the
    answer comes from torch's oneDNN check."""
    fl = cpu_flags() if flags is None else frozenset(flags)
    if fl:
        return bool(fl & NATIVE_BF16_FLAGS)
    if platform.system() == "Darwin":
        try:
            import torch

            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (ImportError, AttributeError, RuntimeError):
            return False
    return False


def checkpoint_dtype(model: str | Path) -> str | None:
    """The dtype a Hugging Face checkpoint folder declares (``torch_dtype`` or ``dtype`` in
    config.json), normalised; None when it is not a local folder or says nothing."""
    cfg = Path(model) / "config.json"
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    for key in ("torch_dtype", "dtype"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str):
            return _ALIASES.get(value, value)
    return None


def resolve_dtype(
    dtype: str,
    *,
    model: str | Path,
    on_cpu: bool,
    native_bf16: bool | None = None,
) -> str:
    """The dtype to hand vLLM. ``dtype`` other than ``"auto"`` is returned as given (after
    alias normalisation); ``"auto"`` becomes ``"float32"`` on a CPU without native bf16
    when the checkpoint is bf16/fp16 or does not say, else stays ``"auto"``."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype: expected a string, got {type(dtype).__name__}")
    d = _ALIASES.get(dtype.lower(), dtype.lower())
    if d not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {list(DTYPES)}")
    if d != "auto" or not on_cpu:
        return d
    if native_bf16 is None:
        native_bf16 = cpu_has_native_bf16()
    if native_bf16:
        return "auto"
    ck = checkpoint_dtype(model)
    return "float32" if ck in (None, "bfloat16", "float16") else "auto"


def log_choice(requested: str, chosen: str, model: str | Path, on_cpu: bool) -> str:
    """Log (at INFO, logger ``ttc.engines``) and return one line saying what was chosen and why."""
    ck = checkpoint_dtype(model) or "unknown"
    if requested.lower() != "auto":
        why = "as requested"
    elif not on_cpu:
        why = "GPU: the checkpoint's dtype"
    elif chosen == "float32":
        why = "CPU without native bf16 (emulated bf16 is ~4x slower)"
    else:
        why = "CPU with native bf16: the checkpoint's dtype"
    line = f"dtype {chosen if chosen != 'auto' else ck} for {Path(model).name} (checkpoint {ck}; {why})"
    log.info(line)
    return line
