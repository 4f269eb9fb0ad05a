"""What the GPU truth kit's Python checks share (GPU.md).

Every check prints one line, ``CHECK <id> PASS|FAIL <detail>``, which run.sh collects. The kit's copy
of the binding (``python/sda``) is imported through ``PYTHONPATH`` and finds the kit's library through
``SDA_LIBRARY``; torch is this machine's own, imported first, so that libsda's backend binds to the
libtorch Python already holds (discovery step 1, "already in the process").
"""

from __future__ import annotations

import os
import subprocess
import sys

MIB = 1 << 20
GIB = 1 << 30
failures = 0


def check(check_id: str, passed: bool, detail: str) -> None:
    global failures
    print(f"CHECK {check_id} {'PASS' if passed else 'FAIL'} {detail}", flush=True)
    if not passed:
        failures += 1


def fail_all(ids: list[str], why: str) -> None:
    for check_id in ids:
        check(check_id, False, why)
    sys.exit(1)


def imports(ids: list[str]):
    """torch (with CUDA) and the kit's sda, or every check of `ids` failed with the reason."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any failure to import is the finding
        fail_all(ids, f"python3 cannot import torch: {type(e).__name__}: {e}")
    if not torch.cuda.is_available():
        fail_all(ids, f"torch {torch.__version__} sees no CUDA device (torch.version.cuda = {torch.version.cuda})")
    try:
        import sda
    except Exception as e:  # noqa: BLE001
        fail_all(ids, f"the kit's binding did not import (SDA_LIBRARY={os.environ.get('SDA_LIBRARY')}): {type(e).__name__}: {e}")
    return torch, sda


def gpu_selector() -> str:
    """The GPU for nvidia-smi -i: the first entry of CUDA_VISIBLE_DEVICES, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible or "0"


def nvidia_smi(fields: str) -> list[str]:
    """One GPU's values of `--query-gpu=fields` (nounits: MiB for memory)."""
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", gpu_selector()],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [f.strip() for f in out.strip().splitlines()[0].split(",")]


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def fraction_marker(text: str) -> bool:
    """libtorch's sign that the per-process memory fraction refused an allocation: 2.13 says
    'would exceed per_process_memory_fraction limit', 2.11 prints 'N GiB allowed;' (only while a
    fraction is set) in its 'CUDA out of memory' text."""
    lower = text.lower()
    return "per_process_memory_fraction" in lower or " allowed;" in lower or "memory fraction" in lower


def done() -> None:
    sys.exit(1 if failures else 0)
