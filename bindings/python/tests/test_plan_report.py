"""Worker plans, recommendations, reports and environment validation from Python."""

from __future__ import annotations

import pytest

import sda


def test_plan_cpu_workers(ctx):
    plan = ctx.plan_workers("cpu", workers=2, worker_id=1)
    assert (plan.strategy, plan.kind, plan.device) == (sda.PlanStrategy.CPU, sda.DeviceKind.CPU, "cpu")
    assert (plan.workers, plan.worker_id) == (2, 1)
    assert "OMP_NUM_THREADS" in plan.env and int(plan.env["OMP_NUM_THREADS"]) >= 1
    assert plan.env_count == len(plan.env)


def test_plan_errors_name_the_value(ctx):
    with pytest.raises(sda.InvalidArgumentError, match="5"):
        ctx.plan_workers("cpu", workers=2, worker_id=5)
    with pytest.raises(sda.InvalidArgumentError, match="tpu"):
        ctx.plan_workers("tpu")


def test_auto_plan_follows_the_gpus(ctx):
    plan = ctx.plan_workers()
    gpus = sum(1 for d in ctx.list_devices() if d.kind == sda.DeviceKind.CUDA)
    expected = {0: sda.PlanStrategy.CPU, 1: sda.PlanStrategy.SINGLE_GPU}.get(gpus, sda.PlanStrategy.MULTI_GPU)
    assert plan.strategy == expected and plan.gpu_count == gpus


def test_recommend_a_tier_and_a_memory_strategy(ctx):
    plain = ctx.recommend()
    assert plain.kind == sda.DeviceKind.CPU and plain.batch_size > 0 and plain.tier_label
    assert not plain.advice_given
    large = ctx.recommend(parameters=10**9)
    assert large.advice_given and large.memory_strategy == "conservative" and large.memory_reason


def test_reports_text_and_json(ctx):
    essential = ctx.report()
    verbose = ctx.report(verbose=True)
    assert "cpu" in essential and len(verbose) > len(essential)
    data = ctx.report_json(verbose=True)
    assert data["schema_version"] >= 2


def test_validate_environment_reports_problems_with_fixes():
    config = sda.Config.from_toml('[hardware]\ndevice = "cpu"\n[paths]\ndatasets = "/proc/version"\n')
    with sda.Context(config) as context:
        problems = context.validate_environment()
    assert all(isinstance(p.severity, sda.Severity) for p in problems)
    assert [p.severity for p in problems] == sorted((p.severity for p in problems), reverse=True), "worst first"
    errors = [p for p in problems if p.severity == sda.Severity.ERROR]
    assert any("/proc/version" in p.message and p.fix for p in errors), problems


def test_severity_names():
    assert [sda.severity_str(s) for s in sda.Severity] == ["info", "warning", "error"]
    assert sda.severity_str(99) == "unknown"
