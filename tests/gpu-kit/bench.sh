#!/usr/bin/env bash
# Check 8 of the GPU truth kit (GPU.md): the figures of `make bench` on this machine (hyperfine is
# not assumed: each whole process is timed here, the median kept), the same per-call figures on
# cuda:0, and `sda info --verbose` and `sda doctor` saved beside the table.
#   bash bench.sh                     (run.sh sets KIT, RESULTS and PY)
set -u
B=$KIT/bin
out=$RESULTS/bench.txt
: >"$out"

# median_ms N COMMAND...: the median wall time of N runs, in ms, after one warm-up; "failed" when a
# run fails.
median_ms() {
  local n=$1 i t0 t1 times=""
  shift
  "$@" >/dev/null 2>&1 || { echo failed; return 1; }
  for ((i = 0; i < n; i++)); do
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo failed; return 1; }
    t1=$(date +%s%N)
    times="$times $(((t1 - t0) / 1000))"
  done
  tr ' ' '\n' <<<"$times" | grep . | sort -n |
    awk '{a[NR] = $1} END {m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f\n", m / 1000}'
}

startup_ok=1
declare -A ms
row() { # row NAME N COMMAND...
  local name=$1
  shift
  ms[$name]=$(median_ms "$@") || startup_ok=0
  printf '| %s | %s |\n' "$name" "${ms[$name]}" | tee -a "$out"
}
echo "| whole process (median wall) | ms |" | tee -a "$out"
echo "|---|---|" | tee -a "$out"
row "libsda: select cpu + info (C, bench/startup_sda.c)" 20 "$B/startup_sda"
row "libsda + sda_backend_load (C)" 5 "$B/startup_sda" --load-backend
row "libsda: select cuda:0 + info (C, smoke test included)" 3 "$B/gpu_bench_cuda" startup
row "python: import torch, select cpu, 32x32 matmul" 3 "$PY" -c 'import torch; d = torch.device("cpu"); x = torch.rand(32, 32, device=d); print(d, (x @ x).sum().item())'
row "python: import torch, cuda 32x32 matmul" 2 "$PY" -c 'import torch; d = torch.device("cuda:0"); x = torch.rand(32, 32, device=d); print(d, (x @ x).sum().item())'
ratio=$(awk -v a="${ms["python: import torch, select cpu, 32x32 matmul"]}" -v b="${ms["libsda: select cpu + info (C, bench/startup_sda.c)"]}" 'BEGIN {if (b > 0 && a > 0) printf "%.0f", a / b; else print "?"}')
echo "python / select+info = ${ratio}x (make bench's target >= 50x; bare libtorch C++ is not built in the kit)" | tee -a "$out"
if [ $startup_ok = 1 ]; then
  echo "CHECK 8.startup PASS select cpu + info $(echo "${ms["libsda: select cpu + info (C, bench/startup_sda.c)"]}") ms, + backend load ${ms["libsda + sda_backend_load (C)"]} ms, select cuda:0 + info ${ms["libsda: select cuda:0 + info (C, smoke test included)"]} ms, python import torch ${ms["python: import torch, select cpu, 32x32 matmul"]} ms (${ratio}x); bench.txt"
else
  echo "CHECK 8.startup FAIL a start-up program failed: $(grep failed "$out" | tr '\n' ' ')"
fi

echo | tee -a "$out"
calls_ok=1
for program in "$B/calls" "$B/guard_overhead" "$B/gpu_bench_cuda calls cpu" "$B/gpu_bench_cuda calls cuda:0"; do
  echo "== $program" | tee -a "$out"
  # shellcheck disable=SC2086
  $program 2>&1 | tee -a "$out"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { calls_ok=0; failed_programs="${failed_programs:-}$(basename "${program%% *}")${program#"${program%% *}"} (exit $rc) "; }
done
figures=$(grep -E '_(us|ns) ' "$out" | awk '{printf "%s%s %s", sep, $1, $2; sep = ", "}')
if [ $calls_ok = 1 ]; then
  echo "CHECK 8.calls PASS $figures"
else
  echo "CHECK 8.calls FAIL failed: ${failed_programs:-?}(bench.txt); measured: $figures"
fi

"$B/sda" info --verbose >"$RESULTS/sda-info-verbose.txt" 2>&1
rc=$?
"$B/sda" info --verbose --json >"$RESULTS/sda-info-verbose.json" 2>&1
device=$(grep -m1 -iE '^device' "$RESULTS/sda-info-verbose.txt" | sed 's/  */ /g')
if [ $rc -eq 0 ] && grep -q 'cuda:0' "$RESULTS/sda-info-verbose.txt"; then
  echo "CHECK 8.info PASS sda info --verbose (sda-info-verbose.txt, .json): $device"
else
  echo "CHECK 8.info FAIL sda info --verbose exited $rc or names no cuda:0: $(head -n 3 "$RESULTS/sda-info-verbose.txt" | tr '\n' ' ')"
fi

"$B/sda" doctor --verbose >"$RESULTS/sda-doctor.txt" 2>&1
rc=$?
"$B/sda" doctor --json >"$RESULTS/sda-doctor.json" 2>/dev/null
codes=$(sed -n 's/^Problem (\([a-z]*\), \([a-z_.]*\)).*/\2 (\1)/p' "$RESULTS/sda-doctor.txt" | tr '\n' ' ')
if [ $rc -le 1 ]; then
  echo "CHECK 8.doctor PASS sda doctor exit $rc (0 info only, 1 warnings): ${codes:-no problems} (sda-doctor.txt)"
else
  echo "CHECK 8.doctor FAIL sda doctor exit $rc (errors): ${codes:-?} (sda-doctor.txt)"
fi
