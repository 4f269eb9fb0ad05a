"""Check 4 of the GPU truth kit (GPU.md), one memory strategy per process:

    python3 strategy.py conservative|balanced|aggressive|custom

The strategy (custom: hardware.memory_fraction = 0.5) goes into the configuration, cuda:0 is selected
(libsda sets libtorch's per-process memory fraction before the smoke test), and this process's torch,
which shares that allocator, allocates just below the fraction (must succeed) and then just above it
(must fail with libtorch's per-process-fraction out-of-memory error although the device has the
memory free). libtorch's limit is fraction x the total cudaMemGetInfo reports, counted against the
bytes its allocator has reserved, so both sizes are computed from those two figures."""

import sys

import kitpy as k

FRACTIONS = {"conservative": 0.60, "balanced": 0.75, "aggressive": 0.90, "custom": 0.50}
name = sys.argv[1] if len(sys.argv) > 1 else ""
if name not in FRACTIONS:
    print(f"usage: strategy.py {'|'.join(FRACTIONS)}")
    sys.exit(2)
fraction = FRACTIONS[name]
IDS = [f"4.{name}.budget", f"4.{name}.below", f"4.{name}.above"]
torch, sda = k.imports(IDS)

config = sda.Config()
config.set("hardware.memory_strategy", name)
if name == "custom":
    config.set("hardware.memory_fraction", fraction)
ctx = sda.Context(config)
try:
    selection = ctx.select_device("cuda:0")
except Exception as e:  # noqa: BLE001
    k.fail_all(IDS, f"select cuda:0 under {name}: {type(e).__name__}: {e}")
if selection.device != "cuda:0":
    k.fail_all(IDS, f"select cuda:0 under {name} gave {selection.device}: {selection.reason}")

memory = ctx.memory_info()
get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
torch_fraction = get_fraction(0) if get_fraction else None
expected = fraction * memory.total
k.check(IDS[0], abs(memory.budget - expected) <= k.MIB and (torch_fraction is None or abs(torch_fraction - fraction) < 1e-6),
        f"budget {k.gib(memory.budget)} = {fraction} x {k.gib(memory.total)} (expected {k.gib(expected)}); "
        f"libtorch's fraction {torch_fraction if torch_fraction is not None else '(not readable in this torch)'}")

MARGIN = 256 * k.MIB
ROUND = 2 * k.MIB
free, total = torch.cuda.mem_get_info(0)
limit = fraction * total
reserved = torch.cuda.memory_reserved(0)
below = int((limit - reserved - MARGIN) // ROUND * ROUND)
try:
    x = torch.empty(below, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    del x
    k.check(IDS[1], True, f"{k.gib(below)} (limit {k.gib(limit)} - reserved {k.mib(reserved)} - {k.mib(MARGIN)}) "
            f"allocated; {k.gib(free)} of {k.gib(total)} was free")
except Exception as e:  # noqa: BLE001
    k.check(IDS[1], False, f"{k.gib(below)} just below the fraction failed ({k.gib(free)} free): {type(e).__name__}: {str(e)[:400]}")
ctx.clear_cache()

free, total = torch.cuda.mem_get_info(0)
reserved = torch.cuda.memory_reserved(0)
above = int((limit - reserved + MARGIN) // ROUND * ROUND + ROUND)
try:
    y = torch.empty(above, dtype=torch.uint8, device="cuda:0")
    del y
    k.check(IDS[2], False, f"{k.gib(above)}, {k.mib(MARGIN)} above the {k.gib(limit)} limit, was allocated: the fraction is not enforced")
except Exception as e:  # noqa: BLE001
    text = str(e)
    first = text.strip().splitlines()[0] if text.strip() else ""
    oom = sda.is_out_of_memory(e)
    marker = k.fraction_marker(text)
    room = above < free
    k.check(IDS[2], oom and marker and room,
            f"{k.gib(above)} ({k.mib(MARGIN)} above the {k.gib(limit)} limit, {k.gib(free)} free on the device: "
            f"{'the device had room' if room else 'NOT below the free memory'}) -> {type(e).__name__}, "
            f"sda.is_out_of_memory {oom}, fraction marker {'found' if marker else 'missing'}: {first[:300]}")
k.done()
