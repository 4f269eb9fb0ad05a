"""Check 6 of the GPU truth kit (GPU.md): reads `sda probe --json` and judges it.

    python3 probe_check.py ID JSON_FILE BUDGET_BYTES

Prints `CHECK ID PASS|FAIL ...` (at most 4 runs, no out-of-memory run, stopped by the budget, not
capped, on cuda:0, every successful trial within the budget) and, last, `ANSWER MAX RECOMMENDED` for
probe.sh."""

import json
import sys

import kitpy as k

check_id, path, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with open(path) as f:
        data = json.load(f)
except Exception as e:  # noqa: BLE001
    try:
        with open(path + ".stderr") as f:
            said = " ".join(f.read().split())[-400:]
    except OSError:
        said = ""
    k.check(check_id, False, f"sda probe gave no JSON ({type(e).__name__}: {e}): {said}")
    print("ANSWER 0 0")
    sys.exit(1)

trials = data.get("trials", [])
over = [t["batch"] for t in trials if t.get("ok") and t.get("peak_bytes", 0) > budget]
answer_ran = any(t.get("ok") and t["batch"] == data.get("max_batch") for t in trials)
passed = (
    data.get("device") == "cuda:0"
    and data.get("runs", 99) <= 4
    and data.get("oom_runs", 99) == 0
    and data.get("stop") == "budget"
    and not data.get("capped")
    and data.get("max_batch", 0) > 0
    and data.get("budget_bytes") == budget
    and answer_ran
    and not over
)
runs = ", ".join(f"{t['batch']}:{'ok' if t.get('ok') else 'oom' if t.get('oom') else 'failed'}/{k.mib(t.get('peak_bytes', 0))}" for t in trials)
k.check(check_id, passed,
        f"{data.get('device')}: max_batch {data.get('max_batch')}, recommended {data.get('recommended_batch')}, "
        f"{data.get('runs')} runs (at most 4), {data.get('oom_runs')} out of memory (0), stop {data.get('stop')}, "
        f"capped {data.get('capped')}, budget {k.mib(data.get('budget_bytes', 0))}, {data.get('elapsed_ms', 0):.0f} ms; "
        f"trials {runs}{'; over the budget: ' + str(over) if over else ''}")
print(f"ANSWER {data.get('max_batch', 0)} {data.get('recommended_batch', 0)}")
k.done()
