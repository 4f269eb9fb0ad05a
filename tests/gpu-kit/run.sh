#!/usr/bin/env bash
# libsda's GPU truth kit (GPU.md, beside this script): built by `make gpu-kit` into build/gpu-kit/,
# carried as a folder to a machine with an NVIDIA GPU and run there:
#
#   bash run.sh            all eight checks (about 2-4 minutes)
#   bash run.sh 3 5        only checks 3 and 5
#
# It prints a PASS/FAIL table and saves it, with every log and the figures of check 8, into
# results/ beside this script, or into $OUT when that is set. Exit status 1 when any check fails.
# Where there is no NVIDIA GPU it says so, runs none of the GPU checks and exits 0 (after a self-check
# of the kit itself, which prints no PASS).
#
# Environment: SDA_GPU_KIT_PYTHON (default python3; it must import a CUDA build of torch),
# SDA_LIBTORCH (default: that torch's lib/ directory), SDA_GPU_KIT_BUDGET_S (default 290: the whole
# run; a check that would start later is a FAIL "not run"), SDA_GPU_KIT_FORCE_NO_GPU=1 (behave as on
# a machine without a GPU; for the kit's own test).
set -u
KIT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
RESULTS=${OUT:-$KIT/results}
PY=${SDA_GPU_KIT_PYTHON:-python3}
BUDGET_S=${SDA_GPU_KIT_BUDGET_S:-290}
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
ONLY=" $* "
mkdir -p "$RESULTS/logs" || { echo "run.sh: cannot write $RESULTS" >&2; exit 2; }
CHECKS=$RESULTS/checks.txt
RUNLOG=$RESULTS/run.log
: >"$CHECKS"
: >"$RUNLOG"

say() { printf '%s\n' "$*" | tee -a "$RUNLOG"; }
elapsed() { echo $(($(date +%s) - START)); }
wanted() { [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $1 "* ]]; }

# The kit's own programs and binding, and nothing of the environment that would change what is tested.
export KIT RESULTS PY
export SDA_LIBRARY=$KIT/lib/libsda.so.0.2
export PYTHONPATH=$KIT/python${PYTHONPATH:+:$PYTHONPATH}
export CUDA_DEVICE_ORDER=${CUDA_DEVICE_ORDER:-PCI_BUS_ID}
for var in SDA_CONFIG SDA_DEVICE SDA_BACKEND; do
  if [ -n "${!var:-}" ]; then say "note: $var=${!var} was set; unset for the kit's checks"; unset "$var"; fi
done

say "libsda GPU truth kit at $KIT"
[ -f "$KIT/MANIFEST.txt" ] && sed 's/^/  /' "$KIT/MANIFEST.txt" | tee -a "$RUNLOG"

# ---- Self-check of the kit (not a GPU check: no PASS lines) ------------------------------------
self_failed=0
self() { # self NAME ok|FAILED DETAIL
  say "SELF $1 $2 $3"
  [ "$2" = ok ] || self_failed=1
}
missing=""
while read -r f; do [ -e "$KIT/$f" ] || missing="$missing $f"; done <"$KIT/MANIFEST.files"
[ -z "$missing" ] && self files ok "every file of MANIFEST.files is present" || self files FAILED "missing:$missing"
if command -v ldd >/dev/null 2>&1; then
  bad=""
  for b in "$KIT"/bin/* "$KIT"/lib/*.so*; do
    [ "$(head -c 4 "$b" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] || continue
    out=$(ldd "$b" 2>&1)
    grep -q 'not found' <<<"$out" && bad="$bad $(basename "$b") ($(grep 'not found' <<<"$out" | awk '{print $1}' | tr '\n' ' '))"
    where=$(sed -n 's/^[[:space:]]*libsda\.so\.0\.2 => \(.*\) (0x[0-9a-f]*)$/\1/p' <<<"$out")
    [ -z "$where" ] || [ "$(cd "$(dirname "$where")" && pwd -P)" = "$KIT/lib" ] || bad="$bad $(basename "$b") (libsda from $where)"
  done
  # The backend modules need libtorch, which comes from SDA_LIBTORCH at run time: only the programs count.
  bad=$(tr ' ' '\n' <<<"$bad" | grep -v '^libsda_torch' | tr '\n' ' ' | sed 's/ *$//')
  [ -z "$bad" ] && self libraries ok "every program finds libsda.so.0.2 in $KIT/lib (rpath \$ORIGIN/../lib)" \
    || self libraries FAILED "$bad"
fi
if v=$("$KIT/bin/gpu_select" self 2>&1); then self c-programs ok "bin/gpu_select starts: $v"; else self c-programs FAILED "$v"; fi
if "$KIT/bin/sda" info --device cpu >"$RESULTS/logs/self-sda-info.log" 2>&1; then
  self cli ok "bin/sda info --device cpu runs"
else
  self cli FAILED "bin/sda info --device cpu: $(tail -n 2 "$RESULTS/logs/self-sda-info.log" | tr '\n' ' ')"
fi
if command -v "$PY" >/dev/null 2>&1; then
  if out=$("$PY" -c 'import sda; print(sda.version(), sda.library_path())' 2>&1); then
    case "$(cd "$(dirname "${out#* }")" 2>/dev/null && pwd -P)" in
      "$KIT/lib") self python ok "the binding loads the kit's libsda: $out" ;;
      *) self python FAILED "the binding loaded another libsda: $out" ;;
    esac
  else
    self python FAILED "$(tail -n 1 <<<"$out")"
  fi
else
  self python FAILED "no $PY on PATH (set SDA_GPU_KIT_PYTHON)"
fi

# ---- Is there an NVIDIA GPU? ---------------------------------------------------------------------
why_none=""
if [ "${SDA_GPU_KIT_FORCE_NO_GPU:-}" = 1 ]; then
  why_none="SDA_GPU_KIT_FORCE_NO_GPU=1 says to behave as without one"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  why_none="nvidia-smi is not installed$(ls /dev/nvidia[0-9]* >/dev/null 2>&1 && echo ', although /dev/nvidia* exists')"
elif ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  why_none="nvidia-smi lists no GPU ($(nvidia-smi -L 2>&1 | head -n 1))"
fi
if [ -n "$why_none" ]; then
  {
    echo "NO NVIDIA GPU: none of the GPU checks ran, and none passed."
    echo "($why_none.) This is not a GPU pass: carry the kit to a machine with an NVIDIA GPU and run it there."
  } | tee -a "$RUNLOG" >"$RESULTS/table.txt"
  echo "no GPU: 0 checks run" >"$RESULTS/summary.txt"
  say "no NVIDIA GPU here ($why_none): none of the GPU checks ran; this is not a GPU pass. Exit $self_failed."
  exit "$self_failed"
fi

# ---- The machine ---------------------------------------------------------------------------------
{
  echo "== date"; date -u
  echo "== uname"; uname -a
  echo "== glibc"; ldd --version 2>&1 | head -n 1
  echo "== nvidia-smi"; nvidia-smi 2>&1
  echo "== nvidia-smi --query-gpu"
  nvidia-smi --query-gpu=index,name,memory.total,memory.free,driver_version,compute_cap,pci.bus_id --format=csv 2>&1
} >"$RESULTS/environment.txt"
torch_facts=$(timeout 120 "$PY" -c '
import os, torch
print("@@", torch.__version__, torch.version.cuda, torch.cuda.is_available(), os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>"$RESULTS/logs/torch-import.log")
torch_rc=$?
{ echo "== $PY: torch (version, CUDA, cuda available, lib)"; echo "$torch_facts"; cat "$RESULTS/logs/torch-import.log"; } >>"$RESULTS/environment.txt"
read -r marker torch_version torch_cuda torch_available torch_lib <<<"$(grep '^@@ ' <<<"$torch_facts" | tail -n 1)"
[ "${marker:-}" = @@ ] || torch_rc=1
if [ $torch_rc -eq 0 ]; then
  export SDA_LIBTORCH=${SDA_LIBTORCH:-$torch_lib}
  say "machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i 0 2>&1), torch $torch_version (CUDA $torch_cuda, cuda available: $torch_available) from $PY; SDA_LIBTORCH=$SDA_LIBTORCH"
  base=${torch_version%%+*}
  module=$(awk -v v="$base" '$1 == "module" && $4 == v {print $2}' "$KIT/MANIFEST.txt" | head -n 1)
  if [ -n "$module" ]; then
    say "backend: $module (built for libtorch $base) matches this machine's torch"
  else
    say "NOTE: the kit's backend modules are built for libtorch $(awk '$1 == "module" {printf "%s%s", sep, $4; sep=", "}' "$KIT/MANIFEST.txt"), this machine's torch is $base: the version may not match, and libsda will refuse it (a libtorch version mismatch) in every check that needs the backend. Rebuild the kit with the matching module (GPU.md)."
  fi
else
  say "NOTE: $PY cannot import torch ($(tail -n 1 "$RESULTS/logs/torch-import.log")): set SDA_GPU_KIT_PYTHON and SDA_LIBTORCH; the checks that need libtorch will fail"
fi

# ---- Steps -----------------------------------------------------------------------------------------
# step NAME LIMIT_S "IDS" COMMAND...: runs COMMAND under a timeout, logs to logs/NAME.log, collects its
# CHECK lines and fails every expected ID it did not report.
step() {
  local name=$1 limit=$2 ids=$3 left rc t0 ms id log=$RESULTS/logs/$1.log
  shift 3
  left=$((DEADLINE - $(date +%s)))
  if [ $left -lt 5 ]; then
    for id in $ids; do echo "CHECK $id FAIL not run: the kit's ${BUDGET_S} s were spent" >>"$CHECKS"; done
    say "[$(elapsed) s] $name: not run (time budget spent)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  { printf '$'; printf ' %q' "$@"; printf '\n'; } >"$log"
  t0=$(date +%s%N)
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  echo "exit $rc after $ms ms" >>"$log"
  grep '^CHECK ' "$log" >>"$CHECKS"
  for id in $ids; do
    if ! grep -qF "CHECK $id " "$log"; then
      local how="exited $rc"
      [ $rc -eq 124 ] || [ $rc -eq 137 ] && how="timed out after $limit s"
      echo "CHECK $id FAIL not reported: $name $how; last line: $(grep -v '^exit ' "$log" | tail -n 1 | cut -c1-300)" >>"$CHECKS"
    fi
  done
  say "[$(elapsed) s] $name: exit $rc in $((ms / 1000)).$(((ms % 1000) / 100)) s, $(grep -c '^CHECK .* PASS ' "$log") passed, $(grep -c '^CHECK .* FAIL ' "$log") failed"
}

C=$KIT/checks
if wanted 1; then
  step 1-select-gpu 90 "1.auto 1.cuda 1.cuda0 1.cuda99 1.workload 1.control" "$KIT/bin/gpu_select" gpu
  step 1-select-cpu 60 "1.cpu" "$KIT/bin/gpu_select" cpu
fi
wanted 2 && step 2-device 45 "2.name 2.memory 2.driver 2.compute_cap 2.count" "$KIT/bin/gpu_device"
wanted 3 && step 3-memory 90 "3.backend 3.allocated 3.reserved 3.peak 3.torch 3.nvml 3.clear_cache 3.reset_peak" "$PY" "$C/memory.py"
if wanted 4; then
  for s in conservative balanced aggressive custom; do
    step "4-strategy-$s" 60 "4.$s.budget 4.$s.below 4.$s.above" "$PY" "$C/strategy.py" "$s"
  done
fi
wanted 5 && step 5-guard-oom 120 "5.oom 5.cache 5.suggested" "$KIT/bin/gpu_guard_oom"
if wanted 6; then
  step 6-probe-builtin 120 "6.probe 6.verify 6.truth" bash "$C/probe.sh" builtin
  step 6-probe-model 120 "6.model.probe 6.model.verify 6.model.truth" bash "$C/probe.sh" model
fi
if wanted 7; then
  step 7-python 90 "7.python.select 7.python.guarded 7.python.torch_oom" "$PY" "$C/binding.py"
  step 7-examples 90 "7.c_example 7.cpp_example" bash "$C/examples.sh"
fi
wanted 8 && step 8-bench-info-doctor 150 "8.startup 8.calls 8.info 8.doctor" bash "$C/bench.sh"

# ---- The table -------------------------------------------------------------------------------------
passed=$(grep -c '^CHECK [^ ]* PASS' "$CHECKS")
failed=$(grep -c '^CHECK [^ ]* FAIL' "$CHECKS")
{
  echo "libsda GPU truth kit: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i 0 2>/dev/null), torch ${torch_version:-?}, $(date -u '+%Y-%m-%d %H:%M UTC'), $(elapsed) s"
  [ -f "$KIT/MANIFEST.txt" ] && grep -E '^(built|commit)' "$KIT/MANIFEST.txt" | tr '\n' ' ' && echo
  printf '%-22s %-6s %s\n' CHECK RESULT DETAIL
  while read -r _ id result detail; do printf '%-22s %-6s %s\n' "$id" "$result" "$detail"; done <"$CHECKS"
  echo "$passed passed, $failed failed$([ "$self_failed" = 1 ] && echo '; the kit self-check FAILED (run.log)')"
} >"$RESULTS/table.txt"
echo
cat "$RESULTS/table.txt"
cat "$RESULTS/table.txt" >>"$RUNLOG"
echo "PASS $passed FAIL $failed" >"$RESULTS/summary.txt"
echo "saved in $RESULTS (table.txt, checks.txt, logs/, environment.txt, bench.txt, sda-info-verbose.txt, sda-doctor.txt)"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$self_failed" -eq 0 ]
