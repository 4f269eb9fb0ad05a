"""Check 7 of the GPU truth kit (GPU.md), the Python side: the kit's copy of the binding on cuda,
beside this machine's torch."""

import kitpy as k

IDS = ["7.python.select", "7.python.guarded", "7.python.torch_oom"]
torch, sda = k.imports(IDS)

ctx = sda.Context()
try:
    selection = ctx.select_device("cuda")
    info = ctx.device_info()
    memory = ctx.memory_info()
except Exception as e:  # noqa: BLE001
    k.fail_all(IDS, f"select cuda: {type(e).__name__}: {e}")
torch_name = torch.cuda.get_device_name(0)
k.check(IDS[0], selection.device == "cuda:0" and not selection.fell_back and info.name == torch_name,
        f"sda {sda.version()} from {sda.library_path()}: select cuda -> {selection.device} ({info.name}; torch says "
        f"{torch_name}), budget {k.gib(memory.budget)} of {k.gib(memory.total)}{'; reason: ' + selection.reason if selection.reason else ''}")

try:
    report = ctx.guarded_run(lambda: ctx.run_workload(64), batch_size=64)
    k.check(IDS[1], report.status == sda.Status.OK and report.measured and report.peak_bytes > 0,
            f"guarded_run(run_workload(64)) -> {report.status.name}, measured {report.measured}, peak {k.mib(report.peak_bytes)}")
except Exception as e:  # noqa: BLE001
    k.check(IDS[1], False, f"guarded_run(run_workload(64)) raised {type(e).__name__}: {e}")


def too_big() -> None:
    torch.empty(2 * memory.total, dtype=torch.uint8, device="cuda:0")


try:
    ctx.guarded_run(too_big, batch_size=8)
    k.check(IDS[2], False, "a torch allocation of twice the device's memory did not fail inside guarded_run")
except sda.OutOfMemoryError as e:
    after = ctx.memory_info()
    try:
        too_big()
        raw = None
    except Exception as t:  # noqa: BLE001
        raw = t
    k.check(IDS[2], e.report is not None and bool(e.report.guidance) and raw is not None and sda.is_out_of_memory(raw),
            f"torch's {type(raw).__name__ if raw else 'nothing'} inside guarded_run -> sda.OutOfMemoryError "
            f"(status {e.code.name}); guidance: {(e.report.guidance if e.report else '')[:200]}; reserved afterwards "
            f"{k.mib(after.reserved)}; sda.is_out_of_memory(torch's exception) {sda.is_out_of_memory(raw) if raw else None}")
except Exception as e:  # noqa: BLE001
    k.check(IDS[2], False, f"guarded_run raised {type(e).__name__} instead of sda.OutOfMemoryError: {str(e)[:300]}")
k.done()
