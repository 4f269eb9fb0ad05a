"""Batch probing from Python: the built-in workload, Python callables as the workload, progress and
cancellation, and exceptions that never cross into libsda."""

from __future__ import annotations

import pytest

import sda

MIB = 1 << 20


def small_workload() -> sda.Workload:
    workload = sda.Workload.default()
    workload.out_channels = 4  # about 0.75 MiB of activations per sample: quick runs
    return workload


def test_probe_the_built_in_workload_under_a_budget(ctx):
    seen = []
    result = ctx.probe_batch(small_workload(), budget_bytes=64 * MIB, max_batch=4096, progress=seen.append)
    assert result.stop in (sda.ProbeStop.BUDGET, sda.ProbeStop.MAX_BATCH)
    assert 0 < result.recommended_batch <= result.max_batch
    assert result.measured_peak_bytes <= result.budget_bytes == 64 * MIB
    assert result.per_sample_bytes > 0
    assert len(seen) == result.runs and all(isinstance(p, sda.ProbeProgress) for p in seen)
    assert any(p.ok and p.batch == result.max_batch for p in seen), "the answer is a batch that ran"


def test_a_python_workload_whose_oom_marks_the_limit(ctx):
    def work(batch):
        if batch > 37:
            raise MemoryError(f"batch {batch} does not fit")
        return None

    result = ctx.probe_batch(work, budget_bytes=1 << 40, max_batch=1000)
    assert result.max_batch <= 37
    assert result.oom_runs >= 0 and result.runs >= 2


def test_a_first_run_that_keeps_memory_does_not_lead_the_search_over_the_budget(ctx):
    """An optimizer's first step makes its state and keeps it, and later steps find it allocated:
    the first run's peak counts it, later runs' do not. Here the first call keeps 30 MiB and every
    call needs 80 MiB a sample, so the line through the first two runs (110 and 160 MiB) would put
    batch 5 (400 MiB) under a 350 MiB budget; the search lowers the first run's point by what it
    left allocated and runs 4 at most (on transformers' AST with Adam a batch went 29 % over)."""
    torch = pytest.importorskip("torch")
    kept = []

    def step(batch):
        if not kept:
            kept.append(torch.ones(30 * MIB // 4))  # made once and kept, as Adam's moments are
        x = torch.ones(batch, 40 * MIB // 4)
        (x * 2).sum()

    seen = []
    budget = 350 * MIB
    result = ctx.probe_batch(step, budget_bytes=budget, max_batch=64, progress=seen.append)
    trials = [(p.batch, p.peak_bytes // MIB) for p in seen]
    assert result.max_batch == 4, trials
    assert all(p.ok and p.peak_bytes <= budget for p in seen), trials
    assert result.runs <= 4, trials


def test_cancelling_from_progress(ctx):
    with pytest.raises(sda.CancelledError):
        ctx.probe_batch(small_workload(), budget_bytes=64 * MIB, progress=lambda progress: False)


def test_other_exceptions_in_the_workload_are_reraised(ctx):
    raised = ValueError("the model does not load")

    def work(batch):
        raise raised

    with pytest.raises(ValueError) as error:
        ctx.probe_batch(work, budget_bytes=64 * MIB)
    assert error.value is raised


def test_exceptions_in_progress_cancel_and_are_reraised(ctx):
    def progress(p):
        raise RuntimeError("progress bar broke")

    with pytest.raises(RuntimeError, match="progress bar broke"):
        ctx.probe_batch(small_workload(), budget_bytes=64 * MIB, progress=progress)


def test_the_recommendation_is_saved_to_a_config(ctx):
    with sda.Config() as config:
        result = ctx.probe_batch(small_workload(), budget_bytes=64 * MIB, save_to=config)
        assert config["hardware.max_batch_size"] == str(result.recommended_batch)


def test_the_first_run_is_the_caller_s_start_batch(ctx):
    batches = []

    def work(batch):
        batches.append(batch)
        if batch > 37:
            raise MemoryError(f"batch {batch} does not fit")

    result = ctx.probe_batch(work, start_batch=30, budget_bytes=1 << 40, max_batch=1000)
    assert batches[0] == 30
    assert result.max_batch == 37 and 37 in batches


def test_a_start_batch_outside_the_range_is_refused(ctx):
    with pytest.raises(sda.InvalidArgumentError, match="start_batch 50"):
        ctx.probe_batch(lambda batch: None, start_batch=50, max_batch=40, budget_bytes=64 * MIB)
