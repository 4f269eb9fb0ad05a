#!/usr/bin/env bash
# libsda's benchmarks: whole-process start-up against bare libtorch and Python (hyperfine, one run,
# ratios printed), per-call costs of sda_device_info / sda_memory_info, and the overhead of a guarded
# run around an empty callback.
#   make bench      (builds first)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
libtorch=$(bash "$root/scripts/provision.sh")
release=$root/target/release
out=$root/build/bench
mkdir -p "$out"
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine >/dev/null; }

cc -O2 -I"$root/include" "$root/bench/startup_sda.c" -L"$release" -lsda -Wl,-rpath,"$release" -o "$out/startup_sda"
cc -O2 -I"$root/include" "$root/bench/calls.c" -L"$release" -lsda -Wl,-rpath,"$release" -o "$out/calls"
cc -O2 -I"$root/include" "$root/bench/guard_overhead.c" -L"$release" -lsda -Wl,-rpath,"$release" -o "$out/guard_overhead"
if [ ! -x "$out/libtorch_matmul" ]; then
  g++ -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -I"$libtorch/include" \
    -I"$libtorch/include/torch/csrc/api/include" "$root/bench/libtorch_matmul.cpp" \
    -L"$libtorch/lib" -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,--as-needed -Wl,-rpath,"$libtorch/lib" \
    -o "$out/libtorch_matmul"
fi
py="$root/.venv/bin/python"
pycode='import torch; d = torch.device("cpu"); x = torch.rand(32, 32, device=d); print(d, (x @ x).sum().item())'

hyperfine -N --warmup 3 --runs 20 --export-json "$out/startup.json" \
  -n "libsda: select cpu + info (C)" "$out/startup_sda" \
  -n "libsda + sda_backend_load (C)" "$out/startup_sda --load-backend" \
  -n "bare libtorch: 32x32 matmul (C++)" "$out/libtorch_matmul" \
  -n "python: import torch, select, info" "$py -c '$pycode'" >/dev/null

python3 - "$out/startup.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
names = list(r)
med = {n: r[n]["median"] * 1000 for n in names}
sda, sda_bk, lt, py = names
print("| program | median wall (ms) | vs bare libtorch | vs python |")
print("|---|---|---|---|")
for n in names:
    print(f"| {n} | {med[n]:.1f} | {med[n]/med[lt]:.3f}x | {med[py]/med[n]:.1f}x faster |" if n != py
          else f"| {n} | {med[n]:.1f} | {med[n]/med[lt]:.3f}x | 1x |")
print()
print(f"select+info / bare libtorch = {med[sda]/med[lt]:.3f} (target <= 0.10)")
print(f"python / select+info = {med[py]/med[sda]:.0f}x (target >= 50x)")
print(f"select+info+backend_load / bare libtorch = {med[sda_bk]/med[lt]:.3f} (target <= 1.15)")
PY
"$out/calls"
"$out/guard_overhead"
