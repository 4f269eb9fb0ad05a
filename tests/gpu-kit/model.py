"""Check 6 of the GPU truth kit (GPU.md), the model file's side.

    python3 model.py make PATH
        writes a TorchScript file (torch.jit.script of a small conv net over [batch, 1, 48000]) with
        this machine's torch, for `sda probe --model PATH --input 1,48000`
    python3 model.py truth PATH BUDGET_BYTES MAX_BATCH RECOMMENDED_BATCH
        in a process of its own: runs the probe's answers (6.model.verify) and searches the true
        largest batch within the budget (6.model.truth), measuring as libsda's backend does: the model
        in eval mode under inference mode, a randn input of [batch, 1, 48000], the peak torch
        allocation above what was allocated before the run.
"""

import sys

import kitpy as k

SHAPE = (1, 48000)


def make(path: str) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv1d(1, 16, 65, padding=32)
            self.c2 = torch.nn.Conv1d(16, 16, 65, padding=32)
            self.c3 = torch.nn.Conv1d(16, 1, 65, padding=32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))

    module = torch.jit.script(Net().eval())
    module.save(path)
    print(f"wrote {path}: torch.jit.script of a 3-layer conv1d net, input [batch, {SHAPE[0]}, {SHAPE[1]}], torch {torch.__version__}")


def truth(path: str, budget: int, answer: int, recommended: int) -> None:
    ids = ["6.model.verify", "6.model.truth"]
    torch, _sda = k.imports(ids)
    device = torch.device("cuda:0")
    module = torch.jit.load(path, map_location=device)
    module.eval()
    runs = 0

    def fits(batch: int) -> tuple[bool, int, str]:
        nonlocal runs
        runs += 1
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        try:
            with torch.inference_mode():
                out = module(torch.randn((batch, *SHAPE), device=device))
                del out
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(device) - before
            outcome = "ok"
        except torch.OutOfMemoryError as e:
            peak, outcome = 0, f"out of memory: {str(e).splitlines()[0][:120]}"
            torch.cuda.empty_cache()
        print(f"batch {batch}: {outcome}, peak {k.mib(peak)}", flush=True)
        return outcome == "ok" and peak <= budget, peak, outcome

    ok, peak, outcome = fits(answer) if answer else (False, 0, "no answer")
    ok_r, peak_r, outcome_r = fits(recommended) if 0 < recommended <= answer else (False, 0, "no recommendation")
    k.check(ids[0], ok and ok_r,
            f"in a fresh process: max_batch {answer} -> {outcome}, peak {k.mib(peak)}; recommended {recommended} -> "
            f"{outcome_r}, peak {k.mib(peak_r)}; budget {k.mib(budget)}")
    lo, hi = (answer, 0) if ok else (0, answer)
    if ok:
        step = answer * 3 // 100 + 1 if answer > 32 else 1
        while runs < 40:
            if not fits(lo + step)[0]:
                hi = lo + step
                break
            lo += step
            step *= 2
    while hi > lo + 1 and runs < 40:
        mid = lo + (hi - lo) // 2
        if fits(mid)[0]:
            lo = mid
        else:
            hi = mid
    if hi == 0 or hi > lo + 1:
        k.check(ids[1], False, f"the search did not close in {runs} runs (lo {lo}, hi {hi})")
    else:
        exact = answer == lo if lo <= 32 else answer * 100 >= lo * 97
        below = 100.0 * (lo - answer) / lo if lo else 0.0
        k.check(ids[1], answer <= lo and exact,
                f"true maximum {lo} (batch {hi} does not fit; {runs} runs), probe said {answer}: {below:.2f} % below "
                f"the truth (promise: never above it, exact up to 32, within 3 % beyond)")
    k.done()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "truth":
        truth(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        print(__doc__)
        sys.exit(2)
