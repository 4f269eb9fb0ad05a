"""Python callables as guarded-run work: statuses out of exceptions, OOMs recovered, other
exceptions re-raised, and nothing ever unwinding into libsda."""

from __future__ import annotations

import weakref

import pytest

import sda

HUGE = 10**9  # samples: the CPU allocator refuses at once


def test_a_successful_run_returns_its_report(ctx):
    calls = []
    report = ctx.guarded_run(lambda: calls.append(1), batch_size=4)
    assert calls == [1]
    assert report.status == sda.Status.OK and report.attempts == 1 and report.attempted_batch == 4


def test_an_sda_out_of_memory_inside_the_work_becomes_a_report_with_guidance(ctx):
    ctx.run_workload(1)  # a successful batch: what one sample costs is known for the suggestion
    with pytest.raises(sda.OutOfMemoryError) as error:
        ctx.guarded_run(lambda: ctx.run_workload(HUGE), batch_size=HUGE)
    report = error.value.report
    assert report.status == sda.Status.ERR_OUT_OF_MEMORY and report.oom_attempts == 1
    assert "DefaultCPUAllocator" in report.guidance
    assert str(error.value) == report.guidance
    assert 0 < report.suggested_batch < HUGE


def test_python_memory_error_is_an_out_of_memory(ctx):
    def work():
        raise MemoryError()

    with pytest.raises(sda.OutOfMemoryError):
        ctx.guarded_run(work, batch_size=8)


def test_a_real_torch_cpu_oom_raised_by_python_code(ctx):
    torch = pytest.importorskip("torch")

    def work():
        torch.empty(10**13)  # 40 TB: libtorch's CPU allocator refuses at once

    with pytest.raises(sda.OutOfMemoryError) as error:
        ctx.guarded_run(work, batch_size=64)
    assert "DefaultCPUAllocator: can't allocate memory" in error.value.report.guidance
    assert error.value.report.failed_allocation_bytes >= 4 * 10**13  # plus the allocator's alignment


def test_a_torch_out_of_memory_error_is_recognised_by_its_type_and_text(ctx):
    torch = pytest.importorskip("torch")

    def work():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total capacity)")

    with pytest.raises(sda.OutOfMemoryError, match="Tried to allocate 2.00 GiB"):
        ctx.guarded_run(work, batch_size=16)


def test_other_exceptions_are_reraised_unchanged_after_the_run(ctx):
    raised = ValueError("shapes do not match")

    def work():
        raise raised

    with pytest.raises(ValueError) as error:
        ctx.guarded_run(work)
    assert error.value is raised
    # The library is unharmed and the next run works.
    assert ctx.guarded_run(lambda: None).status == sda.Status.OK


def test_keyboard_interrupt_inside_the_work_is_reraised(ctx):
    def work():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ctx.guarded_run(work)


def test_sda_errors_other_than_oom_keep_their_class(ctx):
    def work():
        ctx.select_device("tpu")

    with pytest.raises(sda.InvalidArgumentError, match="tpu"):
        ctx.guarded_run(work)


def test_batched_runs_shrink_until_the_work_fits(ctx):
    tried = []

    def work(batch, steps):
        tried.append((batch, steps))
        if batch > 10:
            raise MemoryError(f"batch {batch} does not fit")

    report = ctx.guarded_run_batched(work, batch_size=64, keep_effective_batch=True, max_attempts=8)
    assert tried[0] == (64, 1)
    assert report.final_batch <= 10 and report.final_batch == tried[-1][0]
    assert report.final_batch * report.accumulation_steps >= 64
    assert report.oom_attempts == len(tried) - 1


def test_batched_run_that_never_fits_raises_with_the_report(ctx):
    def work(batch, steps):
        raise MemoryError("never fits")

    with pytest.raises(sda.OutOfMemoryError) as error:
        ctx.guarded_run_batched(work, batch_size=8, max_attempts=3)
    assert error.value.report.attempts <= 3 and error.value.report.final_batch == 0


def test_the_failed_attempt_is_released_before_the_retry(ctx):
    """An OOM exception's traceback holds the failed attempt's frame and its tensors; the binding
    drops it before returning to libsda, so the memory is free when the guard recovers and retries."""

    class Activations:
        pass

    refs = []

    def work(batch, steps):
        if refs:
            # No gc.collect(): the objects must go by reference counting, at once, as tensors do.
            assert refs[-1]() is None, "the failed attempt's objects are still alive at the retry"
        activations = Activations()
        refs.append(weakref.ref(activations))
        if batch > 1:
            raise MemoryError(f"batch {batch}")

    report = ctx.guarded_run_batched(work, batch_size=4)
    assert report.final_batch == 1 and len(refs) >= 2


def test_the_same_python_function_is_the_same_work(ctx):
    """libsda remembers the memory a work measured per sample; a lambda re-created for every run
    must count as the same work, so its work_id is derived from its code."""

    def make():
        return lambda: ctx.run_workload(2)

    first, second = make(), make()
    assert first is not second
    assert sda._work_id(first) == sda._work_id(second)
    assert sda._work_id(first) != sda._work_id(lambda: None)
    ctx.guarded_run(first, batch_size=2)
    with pytest.raises(sda.OutOfMemoryError) as error:
        ctx.guarded_run(lambda: ctx.run_workload(HUGE), batch_size=HUGE, work_id=sda._work_id(first))
    assert error.value.report.suggested_batch > 0
