"""Check 3 of the GPU truth kit (GPU.md): sda_memory_info on cuda:0 against a test allocation of known
size made by this machine's torch in the same process (one caching allocator), against torch's own
counters and against NVML (nvidia-smi); sda_clear_cache and sda_reset_peak."""

import os

import kitpy as k

IDS = ["3.backend", "3.allocated", "3.reserved", "3.peak", "3.torch", "3.nvml", "3.clear_cache", "3.reset_peak"]
torch, sda = k.imports(IDS)

ctx = sda.Context()
try:
    selection = ctx.select_device("cuda:0")
except Exception as e:  # noqa: BLE001
    k.fail_all(IDS, f"select cuda:0: {type(e).__name__}: {e}")
if selection.device != "cuda:0":
    k.fail_all(IDS, f"select cuda:0 gave {selection.device}: {selection.reason}")

backend = sda.backend_info()
torch_version = torch.__version__.split("+")[0]
torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
same_lib = os.path.realpath(os.path.dirname(backend.libtorch_path)) == os.path.realpath(torch_lib)
k.check("3.backend", backend.loaded and backend.cuda_build and backend.libtorch_version == torch_version and same_lib,
        f"module {backend.module_path} (built for libtorch {backend.built_libtorch_version}) runs on "
        f"{backend.libtorch_path} {backend.libtorch_version} (CUDA {backend.libtorch_cuda_version}); "
        f"python's torch {torch.__version__} at {torch_lib}: {'the same' if same_lib else 'NOT the same'} libtorch")

N = 1 << 30  # 1 GiB: a multiple of the allocator's 2 MiB rounding, so exactly N is allocated
torch.cuda.synchronize()
m0 = ctx.memory_info()
x = torch.empty(N, dtype=torch.uint8, device="cuda:0")
torch.cuda.synchronize()
m1 = ctx.memory_info()
t1 = (torch.cuda.memory_allocated(0), torch.cuda.memory_reserved(0), torch.cuda.max_memory_allocated(0))
del x
m2 = ctx.memory_info()
t2 = (torch.cuda.memory_allocated(0), torch.cuda.memory_reserved(0), torch.cuda.max_memory_allocated(0))

k.check("3.allocated", m1.allocated - m0.allocated == N and m2.allocated == m0.allocated,
        f"allocated {m0.allocated} -> {m1.allocated} B with a {k.mib(N)} tensor (+{m1.allocated - m0.allocated}), "
        f"{m2.allocated} B after it was freed")
k.check("3.reserved", m1.reserved - m0.reserved >= N and m2.reserved >= m0.reserved + N,
        f"reserved {k.mib(m0.reserved)} -> {k.mib(m1.reserved)}, still {k.mib(m2.reserved)} once freed (cached)")
k.check("3.peak", m1.peak >= m0.allocated + N and m2.peak == m1.peak,
        f"peak {k.mib(m0.peak)} -> {k.mib(m1.peak)} (at least allocated + {k.mib(N)}), {k.mib(m2.peak)} after the free")
k.check("3.torch", (m1.allocated, m1.reserved, m1.peak) == t1 and (m2.allocated, m2.reserved, m2.peak) == t2,
        f"libsda (allocated, reserved, peak) {(m1.allocated, m1.reserved, m1.peak)} / {(m2.allocated, m2.reserved, m2.peak)}, "
        f"torch.cuda {t1} / {t2}")

before = ctx.memory_info()
try:
    smi_free, smi_total = (float(v) * k.MIB for v in k.nvidia_smi("memory.free,memory.total"))
except Exception as e:  # noqa: BLE001
    smi_free = smi_total = 0.0
    print(f"nvidia-smi: {e}")
after = ctx.memory_info()
cuda_free, cuda_total = torch.cuda.mem_get_info(0)
sda_free = (before.free + after.free) / 2
free_off = abs(sda_free - smi_free) / smi_free if smi_free else 1.0
total_off = abs(after.total - smi_total) / smi_total if smi_total else 1.0
k.check("3.nvml", free_off <= 0.01 and total_off <= 0.01,
        f"free: libsda {k.mib(sda_free)}, NVML {k.mib(smi_free)} ({free_off * 100:.3f} % apart); total: libsda "
        f"{k.mib(after.total)}, NVML {k.mib(smi_total)} ({total_off * 100:.3f} %); within 1 %; "
        f"cudaMemGetInfo says {k.mib(cuda_free)} of {k.mib(cuda_total)}")

ctx.clear_cache()
m3 = ctx.memory_info()
k.check("3.clear_cache", m3.reserved < m2.reserved and m2.reserved - m3.reserved >= N,
        f"sda_clear_cache: reserved {k.mib(m2.reserved)} -> {k.mib(m3.reserved)}; device free "
        f"{k.mib(m2.free)} -> {k.mib(m3.free)}")

ctx.reset_peak()
m4 = ctx.memory_info()
k.check("3.reset_peak", m4.peak == m4.allocated and m4.peak < m2.peak,
        f"sda_reset_peak: peak {k.mib(m2.peak)} -> {k.mib(m4.peak)} (allocated {k.mib(m4.allocated)}); "
        f"torch.cuda.max_memory_allocated {k.mib(torch.cuda.max_memory_allocated(0))}")
k.done()
