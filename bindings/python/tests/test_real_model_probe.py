"""The probe on a real training step under a real address-space limit (issue 12): a small model built
here from torch.nn layers (convolution, GRU, attention), forward + loss + backward + Adam step, in a
child process limited to what it holds after warming up plus a budget (RLIMIT_AS), so that every
failure is a real libtorch allocation failure. In the same child, after the probe, batches run
upward from 1 until one fails: the largest that ran is the true maximum the probe must have found.

The child's environment makes the limit measure memory in use (bench/real_models.py explains each):
one glibc heap arena, glibc's mmap threshold fixed at its default, oneDNN's primitive cache off, and
one intra-op thread.

The budget, 80 MiB, falls between two batches (9 peaked at about 79 MiB, 10 at about 87 on the
development machine). Within about a MiB of a batch's peak, the probe's measure (allocator and
resident-set peaks) and the address space the kernel counts can differ by one batch: at 112 MiB,
batch 13 measured 112.3 MiB, above the budget, and yet ran under the limit, so the probe answered 12
where the true maximum was 13; at 96 MiB, batch 11 measured 96.1 MiB in one run of four."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

MIB = 1 << 20
BUDGET = 80 * MIB

CHILD = textwrap.dedent(
    """
    import gc, json, resource, sys
    import torch
    import sda

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 64, 9, padding=4)
            self.down = torch.nn.Conv1d(64, 64, 32, stride=32)
            self.gru = torch.nn.GRU(64, 64, batch_first=True)
            self.attn = torch.nn.MultiheadAttention(64, 4, batch_first=True)
            self.head = torch.nn.Linear(64, 1)

        def forward(self, x):
            h = self.down(torch.relu(self.conv(x))).transpose(1, 2)
            h, _ = self.gru(h)
            a, _ = self.attn(h, h, h, need_weights=False)
            return self.head(a + h)

    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        x = torch.randn(batch, 1, 8000)
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ctx = sda.Context(sda.Config.from_toml('[hardware]\\ndevice = "cpu"\\n'))
    ctx.select_device("cpu")
    ctx.backend_load()
    step(1)  # warm-up: libtorch's one-time costs and Adam's state, before the limit
    gc.collect()
    with open("/proc/self/status") as f:
        held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    budget = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (held + budget, resource.RLIM_INFINITY))

    trials = []
    result = ctx.probe_batch(step, budget_bytes=budget, progress=lambda p: trials.append(
        {"batch": p.batch, "ok": p.ok, "oom": p.oom, "peak": p.peak_bytes, "predicted": p.predicted_bytes}))

    ran, failure = 0, ""
    for batch in range(1, 257):
        try:
            step(batch)
        except RuntimeError as exception:
            if not sda.is_out_of_memory(exception):
                raise
            failure = str(exception).splitlines()[0][:200]
            break
        ran = batch
    print("RESULT " + json.dumps({
        "max_batch": result.max_batch, "runs": result.runs, "oom_runs": result.oom_runs,
        "stop": result.stop.name, "trials": trials, "true_max": ran, "failure": failure,
    }), flush=True)
    """
)


def test_the_probe_finds_the_true_maximum_of_a_real_training_step_under_rlimit_as():
    env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_THRESHOLD_="131072",
               ONEDNN_PRIMITIVE_CACHE_CAPACITY="0", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(BUDGET)], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"the limited child failed ({proc.returncode}): {proc.stderr[-3000:]}"
    r = json.loads(lines[-1][len("RESULT "):])
    trials = ", ".join(f"{t['batch']}:{'ok' if t['ok'] else 'OOM' if t['oom'] else 'over'}"
                       f"(peak {t['peak'] / MIB:.1f} MiB, predicted {t['predicted'] / MIB:.1f})"
                       for t in r["trials"])
    about = f"probe {r['max_batch']} in {r['runs']} runs ({trials}); true max {r['true_max']} ({r['failure']})"
    assert r["failure"], f"no batch up to 256 failed under the limit: {about}"
    assert r["max_batch"] >= 1 and any(t["ok"] and t["batch"] == r["max_batch"] for t in r["trials"]), \
        f"the answer must be a batch that ran: {about}"
    if r["true_max"] <= 32:
        assert r["max_batch"] == r["true_max"], about
    else:
        assert r["max_batch"] >= 0.97 * r["true_max"], about
    assert r["runs"] <= 6, about
    assert r["oom_runs"] == 0, about
