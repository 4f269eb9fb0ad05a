"""Real models from PyPI as model files (issue 12 item 2), probed as a new user would, and each answer
checked in fresh processes.

SNAC (`snac.SNAC()`, 50.3 M parameters, 0.32 s of mono 44.1 kHz) and EnCodec
(`encodec.EncodecModel.encodec_model_24khz(pretrained=False)`, 14.9 M parameters, 1 s of mono 24 kHz),
random weights, are traced at batch 1 with the venv's torch (`torch.jit.trace`) and saved; libsda
loads the file (`Context.load_model`) and probes it with `budget_bytes` only, in a child with the
default environment (no glibc or oneDNN settings, the default thread count, no address-space limit):
a training step (`train=True`: forward, the mean of the outputs as the loss, backward) or inference.

Then `max_batch` and `max_batch + 1` each run once in fresh children that load the same file through
libsda and limit their address space to what they hold then plus the budget less the model's resident
weights (`setrlimit(RLIMIT_AS)`, VmSize from /proc; the probe counts the weights within the budget, as
the memory they occupy), twice over: **cold**, the batch as the process's first run of the model, and
**after a warm-up**, one run at batch 1 before the limit is taken. The answer holds when `max_batch`
runs and `max_batch + 1` does not; `recommended_batch` (the probe's batch to use) runs the same way.

    make bench-models     # once: the venv (build/bench-models/venv) with snac and encodec
    BENCH_SCRIPT=bench/model_files.py bash bench/real_models.sh [--cells snac-train-2,...] [--settled]

`--settled` runs every child with bench/real_models.py's settings instead (one glibc arena, glibc's
mmap threshold fixed at its default, oneDNN's primitive cache off, one intra-op thread), under which
the C heap returns what a run freed and the resident set tracks the memory in use.

`encodec.utils` imports torchaudio for audio file I/O only, and torchaudio has no build for torch
2.13: an empty module stands in for it in this script's processes (nothing here reads or writes audio).
Prints one Markdown row per cell.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import types

import child_process  # bench/child_process.py, beside this script

GIB = 1 << 30
# name: (input shape of one sample, [(mode, budget GiB), ...])
MODELS = {
    "snac": ((1, 14_112), [("train", 2.0), ("train", 3.0)]),
    "encodec": ((1, 24_000), [("train", 1.0), ("train", 2.0), ("infer", 0.5)]),
}


def trace(name: str, path: str) -> None:
    import torch

    torch.manual_seed(0)
    shape, _ = MODELS[name]
    if name == "snac":
        from snac import SNAC

        class Decoded(torch.nn.Module):
            """SNAC's forward returns (audio, codes); the codes are integers without gradient."""

            def __init__(self) -> None:
                super().__init__()
                self.codec = SNAC()

            def forward(self, x):
                return self.codec(x)[0]

        model = Decoded()
    else:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        from encodec import EncodecModel

        model = EncodecModel.encodec_model_24khz(pretrained=False)
    torch.jit.trace(model, torch.randn(1, *shape), check_trace=False).save(path)


def load(path: str, name: str, mode: str):
    import sda

    ctx = sda.Context()
    ctx.select_device("cpu")
    return ctx, ctx.load_model(path, MODELS[name][0], "f32", mode == "train")


def child_probe(path: str, name: str, mode: str, budget: int) -> dict:
    ctx, model = load(path, name, mode)
    trials = []
    started = time.monotonic()
    result = ctx.probe_batch(model, budget_bytes=budget, progress=lambda p: trials.append(
        f"{p.batch}:{p.peak_bytes >> 20}{'' if p.ok else ' OOM' if p.oom else ' over'}"))
    return {"max": result.max_batch, "rec": result.recommended_batch, "runs": result.runs,
            "ooms": result.oom_runs, "trials": trials,
            "seconds": time.monotonic() - started}


def child_run(path: str, name: str, mode: str, budget: int, batch: int, warm: bool) -> dict:
    import sda

    _, model = load(path, name, mode)
    if warm:
        model.run(1)
    limit = child_process.vm_size() + budget - model.details.resident_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        model.run(batch)
        return {"ran": True}
    except sda.SdaError as error:
        return {"ran": False, "error": type(error).__name__}


SETTLED = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0",
           "OMP_NUM_THREADS": "1"}
CHILD_ENV = dict(os.environ)


def spawn(*args: str) -> dict:
    return child_process.spawn(__file__, *args, env=CHILD_ENV)


def verdict(at: dict, above: dict) -> str:
    if at["ran"] and not above["ran"]:
        return "holds"
    if not at["ran"]:
        return "max_batch fails"
    return "max_batch + 1 runs"


def main() -> None:
    parser = argparse.ArgumentParser()
    cells = [f"{n}-{m}-{g:g}" for n, (_, c) in MODELS.items() for m, g in c]
    parser.add_argument("--cells", default=",".join(cells), help=f"comma-separated, of: {', '.join(cells)}")
    parser.add_argument("--settled", action="store_true", help="children with bench/real_models.py's settings")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.settled:
        CHILD_ENV.update(SETTLED)
    if args.child:
        kind, path, name, mode, gib, *rest = args.child
        budget = int(float(gib) * GIB)
        if kind == "trace":
            trace(name, path)
            print("{}")
        elif kind == "probe":
            print(json.dumps(child_probe(path, name, mode, budget)))
        else:
            print(json.dumps(child_run(path, name, mode, budget, int(rest[0]), kind == "warm")))
        return
    wanted = args.cells.split(",")
    print("| model | step | budget | max_batch | recommended | runs | OOM runs | probe (s) | runs (batch:MiB) | "
          "cold: max, max + 1 | after a warm-up: max, max + 1 | recommended: cold, after a warm-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name, (_, budgets) in MODELS.items():
            mine = [(m, g) for m, g in budgets if f"{name}-{m}-{g:g}" in wanted]
            if not mine:
                continue
            path = os.path.join(work, f"{name}.pt")
            spawn("trace", path, name, "train", "0")
            for mode, gib in mine:
                g = f"{gib:g}"
                probe = spawn("probe", path, name, mode, g)
                checks = {}
                for kind in ("cold", "warm"):
                    at = spawn(kind, path, name, mode, g, str(probe["max"]))
                    above = spawn(kind, path, name, mode, g, str(probe["max"] + 1))
                    checks[kind] = (f"{'runs' if at['ran'] else 'fails'}, {'runs' if above['ran'] else 'fails'}"
                                    f" ({verdict(at, above)})")
                    if probe["rec"] == probe["max"]:
                        checks["rec " + kind] = "runs" if at["ran"] else "fails"
                    else:
                        checks["rec " + kind] = "runs" if spawn(kind, path, name, mode, g, str(probe["rec"]))["ran"] else "fails"
                print(f"| {name} | {'training' if mode == 'train' else 'inference'} | {g} GiB | {probe['max']} | "
                      f"{probe['rec']} | {probe['runs']} | {probe['ooms']} | {probe['seconds']:.0f} | "
                      f"{', '.join(probe['trials'])} | {checks['cold']} | {checks['warm']} | "
                      f"{checks['rec cold']}, {checks['rec warm']} |", flush=True)


if __name__ == "__main__":
    main()
