"""Issue 12's opening scenario, as a new user would run it, checked against fresh processes.

A real model with random weights in a CPU training step (forward, mean absolute output as the loss,
backward, Adam step, `zero_grad(set_to_none=True)`), probed through the Python binding with a Python
callable and `budget_bytes` only: no warm-up, no glibc or oneDNN settings, the default thread count, no
address-space limit on the probe (the issue's setting). The models (`--model`):
- `htdemucs`: HTDemucs (`demucs.htdemucs.HTDemucs`, 4 sources, 26.9 M parameters) on 2 s of stereo
  44.1 kHz audio, the issue's own.
- `ast`: transformers' Audio Spectrogram Transformer (`ASTForAudioClassification(ASTConfig())`,
  86.2 M parameters) on its default input, a 1024 × 128 log-mel spectrogram (10.24 s). Adam's state
  (two moments, 657 MiB) is made by the first step and kept: most of the first run's peak.
- `hifigan`: transformers' SpeechT5 HiFi-GAN vocoder (`SpeechT5HifiGan(SpeechT5HifiGanConfig())`,
  12.6 M parameters) on 200 frames of 80 mel bins.
Then the answer is checked the way the issue checked "batch 2 fits": `max_batch` and `max_batch + 1`
each run one step in a fresh child whose address space is limited to what it holds after building the
model plus the budget (`setrlimit(RLIMIT_AS)`, VmSize from /proc). The answer is right when `max_batch`
runs there and `max_batch + 1` does not.

    make bench-models      # once: the venv with demucs and transformers (build/bench-models/venv)
    SDA_LIBRARY=build/test-prefix/lib/libsda.so.0.2 build/bench-models/venv/bin/python \
        bench/new_user.py [--model htdemucs|ast|hifigan] [--budgets 2,8]

Prints one Markdown row per budget. One sample's training step takes 2–10 s here.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import child_process  # bench/child_process.py, beside this script

GIB = 1 << 30
SAMPLES = 88_200  # 2 s at 44.1 kHz
MEL_FRAMES = 200  # hifigan's input: 200 frames of 80 mel bins, 3.2 s of 16 kHz audio


def build(name: str):
    import torch

    torch.manual_seed(0)
    if name == "htdemucs":
        from demucs.htdemucs import HTDemucs

        model = HTDemucs(sources=["drums", "bass", "other", "vocals"])
        batch_of = lambda batch: torch.randn(batch, 2, SAMPLES)
        output_of = lambda out: out
    elif name == "ast":
        import transformers

        config = transformers.ASTConfig()
        model = transformers.ASTForAudioClassification(config)
        batch_of = lambda batch: torch.randn(batch, config.max_length, config.num_mel_bins)
        output_of = lambda out: out.logits
    elif name == "hifigan":
        import transformers

        config = transformers.SpeechT5HifiGanConfig()
        model = transformers.SpeechT5HifiGan(config)
        batch_of = lambda batch: torch.randn(batch, MEL_FRAMES, config.model_in_dim)
        output_of = lambda out: out
    else:
        raise SystemExit(f"unknown model {name!r}: htdemucs, ast or hifigan")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch: int) -> None:
        output_of(model(batch_of(batch))).abs().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def child_probe(name: str, budget: int) -> dict:
    import sda

    step = build(name)
    trials = []
    started = time.monotonic()
    with sda.Context() as ctx:
        ctx.select_device("cpu")
        result = ctx.probe_batch(step, budget_bytes=budget, progress=lambda p: trials.append(
            f"{p.batch}:{p.peak_bytes >> 20}{'' if p.ok else ' OOM' if p.oom else ' over'}"))
    return {"max": result.max_batch, "recommended": result.recommended_batch, "runs": result.runs,
            "ooms": result.oom_runs, "trials": trials, "seconds": time.monotonic() - started}


def child_run(name: str, budget: int, batch: int) -> dict:
    step = build(name)
    limit = child_process.vm_size() + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        step(batch)
        return {"ran": True}
    except (RuntimeError, MemoryError) as error:
        return {"ran": False, "error": str(error).splitlines()[0][:120]}


def spawn(*args: str) -> dict:
    return child_process.spawn(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="htdemucs", choices=["htdemucs", "ast", "hifigan"])
    parser.add_argument("--budgets", default="2,8", help="GiB, comma-separated")
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, name, budget, *rest = args.child
        budget = int(float(budget) * GIB)
        print(json.dumps(child_probe(name, budget) if kind == "probe" else child_run(name, budget, int(rest[0]))))
        return
    print("| budget | max_batch | recommended | runs | OOM runs | probe (s) | runs (batch:MiB) | "
          "max_batch, fresh child | max_batch + 1, fresh child |")
    print("|---|---|---|---|---|---|---|---|---|")
    for gib in args.budgets.split(","):
        probe = spawn("probe", args.model, gib)
        no_batch = {"ran": False, "error": "no batch fitted"}
        at = spawn("run", args.model, gib, str(probe["max"])) if probe["max"] else no_batch
        above = spawn("run", args.model, gib, str(probe["max"] + 1))
        print(f"| {gib} GiB | {probe['max']} | {probe['recommended']} | {probe['runs']} | {probe['ooms']} | "
              f"{probe['seconds']:.0f} | {', '.join(probe['trials'])} | "
              f"{'runs' if at['ran'] else 'fails: ' + at['error']} | "
              f"{'runs' if above['ran'] else 'fails'} |", flush=True)


if __name__ == "__main__":
    main()
