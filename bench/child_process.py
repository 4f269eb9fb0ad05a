"""What the real-model benches share (`real_models.py`, `model_files.py`, `new_user.py`): every check
runs in a fresh child process of the bench script, and a child limits its own address space to what it
holds plus a budget. Standard library only, so that each bench keeps its own pinned packages."""

from __future__ import annotations

import json
import subprocess
import sys


def vm_size() -> int:
    """This process's address space in bytes (VmSize from /proc), the base of an RLIMIT_AS budget."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def spawn(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Runs `script --child ARGS…` in a new Python and returns the JSON object it printed last; a child
    that fails or prints none ends the bench with its output."""
    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"child {args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])
