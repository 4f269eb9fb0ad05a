"""Issue 12 item 4: batch finders on real audio models, side by side in one run.

Models (from PyPI, random weights, nothing downloaded): HTDemucs (`demucs.htdemucs.HTDemucs`, a
source-separation network; stereo 44.1 kHz) and SNAC (`snac.SNAC()`, its default config, a neural
audio codec; mono 44.1 kHz). The work is one CPU training step: forward, an L1 loss, backward,
Adam step, `zero_grad(set_to_none=True)`, on fresh random audio of the batch.

For each model and budget, every method runs in a child process of its own (this script again, with
`--child`): the child builds the model, warms up once at batch 1 (so that libtorch's one-time costs
and Adam's state are paid), then limits its address space to what it holds now plus the budget
(`setrlimit(RLIMIT_AS)`, VmSize from /proc/self/status) and searches. Two glibc settings make the
limit measure memory in use rather than the C heap's history: `MALLOC_ARENA_MAX=1` (as in
crates/sda-testkit/src/child.rs: no 64 MiB arena reserved per thread) and `MALLOC_MMAP_THRESHOLD_=131072`
(glibc's default threshold, fixed: every block of 128 KiB or more is its own mapping, returned when
freed). Without the second, glibc raises the threshold after the first large free, later tensors come
from the brk heap, which fragments and is not returned: a batch that ran once then fails when run
again in the same process (HTDemucs at 0.5 GiB: batch 5 ran in a fresh child, and failed on its second
run), so the limit measured the order of the runs, not the model. And oneDNN's primitive cache is off
(`ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`): each new batch size cached convolution primitives that held
about 92 MiB more address space on HTDemucs (9 MiB of it resident), for as long as the process lived,
so after runs at 1, 2 and 3 a batch 4 failed that ran in a fresh child (step times unchanged within
noise). The methods:

- libsda: `Context.probe_batch(work, budget_bytes=budget)`; the answer is `max_batch`;
- Accelerate: `accelerate.utils.find_executable_batch_size` (Accelerate's own code, its default start
  of 128, × 0.9 after each failure, its own out-of-memory test `should_reduce_batch_size`); the answer
  is the batch it ran. One change, in the decorated function: oneDNN's allocation failure under the
  limit, `RuntimeError: could not create a primitive`, is re-raised as a RuntimeError whose text
  Accelerate recognises ("DefaultCPUAllocator: can't allocate memory ..."); Accelerate's test knows
  only the allocator's text, and without the change its search ends at the first such failure with
  the exception (it did at 128 on HTDemucs);
- Lightning-style: the loop of Lightning's `_run_binary_scaling` (double from 1 until out of memory,
  then bisect), with Lightning's out-of-memory test for the CPU (`is_oom_error`) plus the same oneDNN
  text; one training step per trial (Lightning itself runs three).

The true maximum is searched in fresh children (each warms up, limits itself the same way and runs one
batch): from the largest batch that completed in any method's child (it ran under the same limit),
upward (galloping, then bisection) to the first batch that fails; the two batches above the answer
are both confirmed to fail in fresh children.

Every child runs one intra-op thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)): on the shared
two-core machine two OpenMP threads made a step ten times slower while other builds ran.

    python bench/real_models.py [--models htdemucs,snac] [--budgets htdemucs=0.5,1,2 ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

import child_process  # bench/child_process.py, beside this script

GIB = 1 << 30
MIB = 1 << 20

MODELS = {
    # name: (what it is, default clip seconds, default budgets in GiB)
    "htdemucs": ("HTDemucs (demucs 4.1.0), source separation, stereo", 0.25, (0.5, 1.0, 2.0)),
    "snac": ("SNAC (snac 1.2.1, default config), codec, mono", 0.32, (2.0, 3.0)),
}
METHODS = ("libsda", "accelerate", "lightning")
METHOD_NAMES = {
    "libsda": "libsda probe",
    "accelerate": "Accelerate find_executable_batch_size",
    "lightning": "Lightning-style: double + bisect",
}
CHILD_TIMEOUT_S = 1800


# ---- the child ------------------------------------------------------------------------------------


def build(model_name: str, seconds: float):
    """The model, its optimizer and `step(batch)`: one training step on fresh random audio."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    samples = int(round(44100 * seconds))
    if model_name == "htdemucs":
        from demucs.htdemucs import HTDemucs

        model = HTDemucs(sources=["drums", "bass", "other", "vocals"], audio_channels=2,
                         samplerate=44100, segment=seconds)
        channels = 2

        def loss_of(x):
            y = model(x)  # [batch, sources, channels, samples]
            return (y - x.unsqueeze(1)).abs().mean()
    elif model_name == "snac":
        import snac

        model = snac.SNAC()
        channels = 1

        def loss_of(x):
            y, _codes = model(x)
            return (y - x).abs().mean()
    else:
        raise SystemExit(f"unknown model {model_name}")
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch: int) -> None:
        x = torch.randn(batch, channels, samples)
        loss = loss_of(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def limit_address_space(budget: int) -> int:
    held = child_process.vm_size()
    limit = held + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    return held


#: oneDNN's text when it cannot allocate what a convolution needs (its own buffers, not torch's).
ONEDNN_OOM = "could not create a primitive"


def lightning_is_oom(exception: BaseException) -> bool:
    """Lightning's is_oom_error (lightning/pytorch/utilities/memory.py: CUDA, cuDNN and the CPU
    allocator), plus oneDNN's allocation failure (the one addition)."""
    if not (isinstance(exception, RuntimeError) and len(exception.args) == 1):
        return False
    text = exception.args[0]
    return ("CUDA" in text and "out of memory" in text) or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in text \
        or "DefaultCPUAllocator: can't allocate memory" in text or ONEDNN_OOM in text


def first_line(exception: BaseException) -> str:
    """The line that says what failed (TorchScript puts its own line first, SNAC's Snake is scripted)."""
    lines = str(exception).splitlines() or [type(exception).__name__]
    telling = [line for line in lines if "allocate" in line or ONEDNN_OOM in line]
    return (telling or lines)[0].strip()[:160]


def child(spec: dict) -> dict:
    model, method, budget = spec["model"], spec["method"], spec["budget"]
    step = build(model, spec["seconds"])
    ctx = None
    if method == "libsda":
        import sda

        ctx = sda.Context(sda.Config.from_toml('[hardware]\ndevice = "cpu"\n'))
        ctx.select_device("cpu")
        ctx.backend_load()  # before the limit, like the warm-up: a one-time cost
    step(1)  # warm-up
    gc.collect()
    held = limit_address_space(budget)
    out = {"held_bytes": held, "limit_bytes": held + budget}
    trials = []
    start = time.perf_counter()
    try:
        if method == "libsda":
            import sda

            errors = []

            def work(batch):
                try:
                    step(batch)
                except BaseException as exception:  # recorded for the report, then the probe's to judge
                    errors.append(first_line(exception))
                    raise

            def progress(p):
                trials.append({"batch": p.batch, "ok": p.ok, "oom": p.oom, "peak_mib": round(p.peak_bytes / MIB, 1),
                               "predicted_mib": round(p.predicted_bytes / MIB, 1)})
                if not p.ok and errors:
                    trials[-1]["error"] = errors[-1]

            result = ctx.probe_batch(work, budget_bytes=budget, progress=progress)
            out.update(answer=result.max_batch, runs=result.runs, oom_runs=result.oom_runs, stop=result.stop.name,
                       recommended=result.recommended_batch)
        elif method == "accelerate":
            from accelerate.utils import find_executable_batch_size

            @find_executable_batch_size  # Accelerate's default: starting_batch_size=128, × 0.9 on each OOM
            def search(batch_size):
                trials.append({"batch": batch_size, "ok": False})
                try:
                    step(batch_size)
                except RuntimeError as exception:
                    trials[-1]["error"] = first_line(exception)
                    trials[-1]["held_after_mib"] = round((child_process.vm_size() - held) / MIB)
                    if ONEDNN_OOM in str(exception):  # the one change (see the module's documentation)
                        raise RuntimeError("DefaultCPUAllocator: can't allocate memory (oneDNN: "
                                           f"{first_line(exception)})") from None
                    raise
                trials[-1]["ok"] = True
                return batch_size

            out.update(answer=search())
            out.update(runs=len(trials), oom_runs=sum(not t["ok"] for t in trials))
        elif method == "lightning":
            # Lightning's _run_binary_scaling (lightning/pytorch/tuner/batch_size_scaling.py), from 1.
            new_size, low, high, count, max_trials = 1, 1, None, 0, 25
            while True:
                gc.collect()
                trials.append({"batch": new_size, "ok": False})
                try:
                    step(new_size)
                except RuntimeError as exception:
                    trials[-1]["error"] = first_line(exception)
                    if not lightning_is_oom(exception):
                        raise
                    del exception
                    gc.collect()
                    high = new_size
                    new_size = (high + low) // 2
                    if high - low <= 1:
                        break
                    continue
                trials[-1]["ok"] = True
                count += 1
                if count > max_trials:
                    break
                low = new_size
                if high:
                    if high - low <= 1:
                        break
                    new_size = (high + low) // 2
                else:
                    new_size *= 2
            out.update(answer=new_size, runs=len(trials), oom_runs=sum(not t["ok"] for t in trials))
        elif method == "trial":
            batch = spec["batch"]
            try:
                step(batch)
                out.update(ok=True)
            except RuntimeError as exception:
                if not lightning_is_oom(exception):
                    raise
                out.update(ok=False, failure=first_line(exception))
        else:
            raise SystemExit(f"unknown method {method}")
    except Exception as exception:  # the method gave up: its runs so far are still the result
        out.update(error=f"{type(exception).__name__}: {first_line(exception)}", runs=len(trials),
                   oom_runs=sum(not t["ok"] for t in trials))
    out["wall_s"] = time.perf_counter() - start
    out["trials"] = trials
    return out


# ---- the parent -----------------------------------------------------------------------------------


def run_child(spec: dict) -> dict:
    env = dict(os.environ, MALLOC_ARENA_MAX="1", MALLOC_MMAP_THRESHOLD_="131072", ONEDNN_PRIMITIVE_CACHE_CAPACITY="0",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                              env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT_S} s", "process_s": CHILD_TIMEOUT_S}
    process_s = time.perf_counter() - started
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["process_s"] = process_s
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit status {proc.returncode}: " + " | ".join(tail), "process_s": process_s}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def true_maximum(base: dict, start: int, memo: dict) -> int:
    """The largest batch that runs in a fresh child under the limit, from `start` upward; the two
    batches above the answer are confirmed not to run."""

    def fits(batch: int) -> bool:
        if batch < 1:
            return True
        if batch not in memo:
            r = run_child(dict(base, method="trial", batch=batch))
            if "error" in r:
                raise RuntimeError(f"true-maximum child at batch {batch}: {r['error']}")
            memo[batch] = r["ok"]
            log(f"    true max: batch {batch} {'ran' if r['ok'] else 'failed: ' + r.get('failure', '')}"
                f" ({r['process_s']:.0f} s)")
        return memo[batch]

    low = max(start, 1)
    while not fits(low):  # the methods' best did not run in a fresh child: go down
        low //= 2
        if low == 0:
            return 0
    while True:
        step, high = 1, None
        while fits(low + step):
            low += step
            step *= 2
        high = low + step
        while high - low > 1:  # low fits, high does not
            mid = (low + high) // 2
            if fits(mid):
                low = mid
            else:
                high = mid
        if fits(low + 2):  # not monotonic: keep searching above
            low += 2
            continue
        return low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", nargs="*", default=[],
                        help="per model, GiB: htdemucs=0.5,1,2 snac=2,4")
    parser.add_argument("--seconds", nargs="*", default=[], help="clip length per model: htdemucs=0.25")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    budgets = {m: MODELS[m][2] for m in MODELS}
    seconds = {m: MODELS[m][1] for m in MODELS}
    for item in args.budgets:
        name, values = item.split("=")
        budgets[name] = tuple(float(v) for v in values.split(","))
    for item in args.seconds:
        name, value = item.split("=")
        seconds[name] = float(value)
    methods = args.methods.split(",")
    bench_start = time.perf_counter()
    rows = []
    for model in args.models.split(","):
        for gib in budgets[model]:
            budget = int(gib * GIB)
            base = {"model": model, "budget": budget, "seconds": seconds[model]}
            cells = {}
            for method in methods:
                log(f"{model} {gib:g} GiB: {method} ...")
                r = run_child(dict(base, method=method))
                cells[method] = r
                if "error" in r:
                    log(f"    {method}: {r['error']}")
                if "runs" in r:
                    trials = " ".join(f"{t['batch']}{'' if t['ok'] else '✗'}" for t in r["trials"])
                    log(f"    {method}: answer {r.get('answer')}, {r['runs']} runs, {r['oom_runs']} OOM, "
                        f"{r['wall_s']:.1f} s; trials {trials}")
            completed = [t["batch"] for c in cells.values() for t in c.get("trials", []) if t["ok"]]
            start = max(completed or [1])
            # The largest batch that completed in a method's child ran under the same limit.
            memo: dict = {start: True} if completed else {}
            t0 = time.perf_counter()
            try:
                truth = true_maximum(base, start, memo)
            except RuntimeError as e:
                log(f"    {e}")
                truth = None
            log(f"    true max {truth} ({time.perf_counter() - t0:.0f} s)")
            rows.append({"model": model, "budget_gib": gib, "seconds": seconds[model], "true_max": truth,
                         "true_max_trials": memo, "cells": cells})
    total = time.perf_counter() - bench_start
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "total_s": total}, f, indent=1)
    print_table(rows, total)


def print_table(rows: list, total: float) -> None:
    print("| model | budget | true max | method | answer | answer ÷ true max | runs | OOM runs | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        truth = row["true_max"]
        for method, c in row["cells"].items():
            label = f"{row['model']} ({row['seconds']:g} s)"
            if "error" in c:
                counts = f"{c['runs']} | {c['oom_runs']} | {c['wall_s']:.1f}" if "wall_s" in c else " | | "
                print(f"| {label} | {row['budget_gib']:g} GiB | {truth} | {METHOD_NAMES[method]} | none "
                      f"({c['error'][:100]}) | – | {counts} |")
                continue
            ratio = f"{c['answer'] / truth:.2f}" if truth else "–"
            print(f"| {label} | {row['budget_gib']:g} GiB | {truth} | {METHOD_NAMES[method]} | {c['answer']} | "
                  f"{ratio} | {c['runs']} | {c['oom_runs']} | {c['wall_s']:.1f} |")
    print()
    print("Goal (libsda): answer = true max when ≤ 32, ≥ 0.97× above; ≤ 4 runs; 0 OOM runs; wall < ½ Accelerate's.")
    print()
    print("| model | budget | exact / ≥ 0.97 | runs ≤ 4 | 0 OOM | < ½ Accelerate's wall |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        c, a, truth = row["cells"].get("libsda", {}), row["cells"].get("accelerate", {}), row["true_max"]
        if "answer" not in c or not truth:
            continue
        accurate = c["answer"] == truth if truth <= 32 else c["answer"] >= 0.97 * truth
        faster = f"{'yes' if c['wall_s'] < 0.5 * a['wall_s'] else 'no'} ({c['wall_s'] / a['wall_s']:.2f})" \
            if "wall_s" in a else "–"
        print(f"| {row['model']} | {row['budget_gib']:g} GiB | {'yes' if accurate else 'no'} | "
              f"{'yes' if c['runs'] <= 4 else 'no'} | {'yes' if c['oom_runs'] == 0 else 'no'} | {faster} |")
    print()
    print("libsda's trials, in order (batch: measured peak MiB / predicted MiB; OOM: ran out of memory; "
          "over: completed above the budget):")
    for row in rows:
        c = row["cells"].get("libsda", {})
        if "trials" in c:
            budget_mib = row["budget_gib"] * 1024

            def mark(t):
                if not t["ok"]:
                    return " OOM" if t["oom"] else " failed"
                return " over" if t["peak_mib"] > budget_mib else ""

            parts = [f"{t['batch']}: {t['peak_mib']:.0f}/{t['predicted_mib']:.0f}{mark(t)}" for t in c["trials"]]
            print(f"- {row['model']} {row['budget_gib']:g} GiB: " + ", ".join(parts))
    print()
    print(f"Whole bench: {total / 60:.1f} min.")


if __name__ == "__main__":
    main()
