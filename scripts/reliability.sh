#!/usr/bin/env bash
# libsda's reliability suite (issue 7): what a host must never see — crashes, hangs, leaks, torn
# files — tried on purpose, with figures.
#
#   scripts/reliability.sh --bounded   (make test-reliability, part of make test; about a minute)
#       the C/C++ tests built with AddressSanitizer + UndefinedBehaviorSanitizer and run; valgrind
#       memcheck over the C tests that load no libtorch (test_handles, test_no_backend). The bounded
#       Rust parts (tests/reliability_*.rs: fuzzing, threads, crash-safe saves, broken installs, OOM
#       torture) run in make test-rust with their bounded sizes.
#   scripts/reliability.sh --long      (make reliability; about 10 minutes on 2 cores)
#       the Rust parts at their long sizes (SDA_RELIABILITY_LONG=1), the sanitizer run, valgrind over
#       the same programs plus test_abi (which loads libtorch: tens of seconds under valgrind), and
#       RELIABILITY.md regenerated from the measured results.
#
# Every row of the table comes from a run: the Rust tests append theirs (SDA_RELIABILITY_RESULTS),
# this script appends the sanitizer and valgrind rows. The bounded run writes its table to
# build/reliability/RELIABILITY-bounded.md and leaves RELIABILITY.md alone.
set -euo pipefail

mode=bounded
case "${1:-}" in
  --long) mode=long ;;
  --bounded | "") mode=bounded ;;
  *) echo "usage: $0 [--bounded|--long]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
LIBTORCH=$(bash scripts/provision.sh)
export LIBTORCH
release=$root/target/release
out=$root/build/reliability
mkdir -p "$out"
rows=$out/rows-$mode.tsv
: >"$rows"
started=$(date +%s)

log() { printf 'reliability: %s\n' "$*" >&2; }
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$rows"; }

# valgrind comes with provisioning (scripts/provision.sh installs it when missing).
command -v valgrind >/dev/null 2>&1 || { log "valgrind is missing: sudo apt-get install valgrind"; exit 1; }

# The artifacts: the release libraries the C tests link (as make build makes them).
if [ "$mode" = long ] || [ ! -e "$release/libsda.so" ]; then
  make -s -C "$root" build >&2
fi

# ------------------------------------------------------------------------------------------------
# Long: the Rust reliability tests at their long sizes.
if [ "$mode" = long ]; then
  log "Rust reliability tests, long sizes (fuzz, threads, crash-safe saves, broken installs, OOM)"
  cargo build --workspace --features sda/test-hooks >&2
  # A failing test does not stop the run: the table is written with the failures in it, and the
  # script fails at the end.
  set +e
  SDA_RELIABILITY_LONG=1 SDA_RELIABILITY_RESULTS=$rows \
    cargo nextest run -p sda --features test-hooks --no-fail-fast \
    -E 'binary(/^reliability_/)' 2>&1 | tee "$out/rust-$mode.log" >&2
  set -e
  failed_tests=$(sed -n 's/^ *FAIL \[[^]]*\] ([^)]*) sda::\([a-z_]*\) \([a-z_0-9]*\)$/\1::\2/p' \
    "$out/rust-$mode.log" | sort -u | paste -sd, - | sed 's/,/, /g')
fi
failed_tests=${failed_tests:-}

# ------------------------------------------------------------------------------------------------
# The C/C++ tests: the plain build (as make test-c) for valgrind, and a sanitizer build.
cmake -S tests/c -B build/ctest -DSDA_LIB_DIR="$release" -DSDA_INCLUDE_DIR="$root/include" >/dev/null
cmake --build build/ctest -j 2 >/dev/null
log "C/C++ tests with AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S tests/c -B build/ctest-asan -DSDA_SANITIZE=ON -DSDA_LIB_DIR="$release" \
  -DSDA_INCLUDE_DIR="$root/include" >/dev/null
cmake --build build/ctest-asan -j 2 >/dev/null
# allocator_may_return_null: the OOM examples ask for tens of GiB on purpose and must get NULL (as
# from malloc), not ASan's abort. LeakSanitizer runs at every exit (detect_leaks).
asan_log=$out/asan-$mode.log
asan_ctest() {
  ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=${detect_leaks:-1}:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/ctest-asan --output-on-failure "$@"
}
# LeakSanitizer's own tracer can crash at exit while it scans a thread's dynamic TLS after libtorch
# was loaded ("Tracer caught signal 11 ... DTLS ... LeakSanitizer has encountered a fatal error"; seen
# on test_plan in fresh clones, depending on the memory layout): a crash of the tool, not a report
# about the program. Only when that is the whole story are the failed tests run once more with
# AddressSanitizer and UBSan as before but without the leak check, and the table says so; any real
# report (a leak, an invalid access, UB, a failed check) fails at once.
tool_crashes=0
crashed_tests=""
if ! asan_ctest >"$asan_log" 2>&1; then
  if grep -q 'LeakSanitizer has encountered a fatal error' "$asan_log" &&
    ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer):|runtime error:|CHECK failed' "$asan_log"; then
    tool_crashes=$(grep -c 'LeakSanitizer has encountered a fatal error' "$asan_log")
    crashed_tests=$(sed -n 's/^[[:space:]]*[0-9]* - \([a-z0-9_]*\) (.*/\1/p' "$asan_log" | paste -sd, - | sed 's/,/, /g')
    log "LeakSanitizer's tracer crashed in $crashed_tests (a tool fault); running them again without the leak check"
    cp "$asan_log" "$asan_log.first"
    if ! detect_leaks=0 asan_ctest --rerun-failed >"$asan_log.rerun" 2>&1; then
      cat "$asan_log.first" "$asan_log.rerun" >&2
      log "FAILED under AddressSanitizer/UBSan: see $asan_log.first and $asan_log.rerun"
      exit 1
    fi
    # Both runs in one log: the counts below see every test passing, once.
    cat "$asan_log.first" "$asan_log.rerun" >"$asan_log"
  else
    cat "$asan_log" >&2
    log "FAILED under AddressSanitizer/UBSan: see $asan_log"
    exit 1
  fi
fi
asan_tests=$(sed -n 's/.*tests passed, [0-9]* tests\{0,1\} failed out of \([0-9]*\).*/\1/p' "$asan_log" | head -1)
asan_names=$(sed -n 's/.*Test *#[0-9]*: \([a-z0-9_]*\) .*Passed.*/\1/p' "$asan_log" | paste -sd, - | sed 's/,/, /g')
reports=$(grep -cE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$asan_log" || true)
row "2. Sanitizers: ASan + UBSan" \
  "the C and C++ tests of tests/c (the C ABI contract, sda.hpp, examples, probes, plans, handles, no-backend) built with -fsanitize=address,undefined (tests/c/CMakeLists.txt, SDA_SANITIZE=ON), LeakSanitizer at exit; libtorch loaded where the tests load it" \
  "$asan_tests test programs: $asan_names" \
  "all passed; $reports AddressSanitizer, LeakSanitizer or UBSan reports$([ "$tool_crashes" = 0 ] || echo "; LeakSanitizer's own tracer crashed at exit in $crashed_tests, which passed again under ASan + UBSan without the leak check")"
handles_asan=$(grep -o 'handles: [0-9]* checks, 0 failed' "$asan_log" | head -1 || true)
[ -z "$handles_asan" ] && handles_asan=$(ASAN_OPTIONS=detect_leaks=1 build/ctest-asan/test_handles | tail -1)

# ------------------------------------------------------------------------------------------------
# valgrind memcheck. The programs see no GPU: memcheck does not run the CUDA driver usefully, and the
# CUDA paths are not what is checked here.
export CUDA_VISIBLE_DEVICES=
supp=$root/tests/c/valgrind.supp
vg_total_errors=0
vg_names=()
vg_details=()
# vg NAME COMMAND...: runs COMMAND under memcheck; gate: 0 errors, 0 bytes definitely lost.
vg() {
  local name=$1
  shift
  local logf=$out/valgrind-$name.log
  log "valgrind memcheck: $name"
  local t0
  t0=$(date +%s)
  set +e
  valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite,possible \
    --errors-for-leak-kinds=definite --suppressions="$supp" --num-callers=40 \
    --error-exitcode=99 "$@" >"$logf" 2>&1
  local rc=$?
  set -e
  local errors definite reachable suppressed
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$logf" | tail -1 | tr -d ,)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$logf" | tail -1 | tr -d ,)
  reachable=$(sed -n 's/.*still reachable: \([0-9,]*\) bytes.*/\1/p' "$logf" | tail -1 | tr -d ,)
  suppressed=$(sed -n 's/.*suppressed: \([0-9,]*\) bytes.*/\1/p' "$logf" | tail -1 | tr -d ,)
  # No leak summary at all: everything was freed.
  definite=${definite:-0} reachable=${reachable:-0} suppressed=${suppressed:-0}
  if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ] || [ "$definite" != 0 ]; then
    tail -60 "$logf" >&2
    log "FAILED under valgrind: $name (exit $rc, ${errors:-?} errors, $definite bytes definitely lost): $logf"
    exit 1
  fi
  vg_names+=("$name")
  vg_details+=("$name: 0 errors, 0 B definitely lost, $reachable B still reachable, $suppressed B suppressed ($(($(date +%s) - t0)) s)")
}

# No libtorch in these: fast under valgrind.
vg handles build/ctest/test_handles
nb=$(mktemp -d)
trap 'rm -rf "$nb"' EXIT
cp build/ctest/test_no_backend "$nb/"
cp -L "$release/libsda.so" "$nb/$(objdump -p "$release/libsda.so" | awk '/SONAME/ {print $2}')"
vg no_backend "$nb/test_no_backend"
# The Rust fuzz driver (tests/reliability_fuzz.rs) under memcheck, without the backend: garbage
# arguments through every export, with libsda's own code watched for invalid reads and leaks.
fuzz_calls=$([ "$mode" = long ] && echo 5000 || echo 500)
fuzz_bin=$(cargo test -p sda --features test-hooks --test reliability_fuzz --no-run \
  --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\/reliability_fuzz-[^"]*\)".*/\1/p' | tail -1)
# Only the test binary itself: cargo also reports the CLI it builds for the tests, in any order.
[ -x "$fuzz_bin" ] || { echo "reliability: the fuzz test binary was not found" >&2; exit 1; }
export SDA_FUZZ_CHILD=1 SDA_FUZZ_NO_RLIMIT=1 SDA_BACKEND=/nonexistent/libsda_torch.so
export SDA_FUZZ_SEED=${SDA_FUZZ_SEED:-$started} SDA_FUZZ_CALLS=$fuzz_calls SDA_FUZZ_TRACE=$out/fuzz-trace
vg "fuzz_driver_${fuzz_calls}_calls_seed_$SDA_FUZZ_SEED" "$fuzz_bin" --exact \
  random_calls_with_bad_arguments_always_return_a_status --nocapture --test-threads 1
unset SDA_FUZZ_CHILD SDA_FUZZ_NO_RLIMIT SDA_BACKEND SDA_FUZZ_SEED SDA_FUZZ_CALLS SDA_FUZZ_TRACE
if [ "$mode" = long ]; then
  # The C ABI contract test, which loads libtorch (sda_backend_load): libtorch's start-up under
  # memcheck takes tens of seconds, so only the long run does it.
  vg abi_c_with_libtorch build/ctest/test_abi
fi
handles_vg=$(grep -o 'handles: [0-9]* checks, 0 failed' "$out/valgrind-handles.log" | head -1)
row "2. Leaks and memory errors: valgrind memcheck" \
  "C tests, and the Rust fuzz driver without the backend, under memcheck (--leak-check=full; libsda's own code is watched, not only the instrumented test code); libtorch's and the loader's process-lifetime blocks suppressed by tests/c/valgrind.supp, one comment per entry$([ "$mode" = long ] || echo "; test_abi (loads libtorch, ~25 s under memcheck) only in make reliability")" \
  "${#vg_names[@]} programs: $(IFS=,; echo "${vg_names[*]}" | sed "s/,/, /g")" \
  "$(IFS=';'; echo "${vg_details[*]}" | sed 's/;/; /g')"
row "3. Handles" \
  "double free and use after free of sda_config and sda_context through every function that takes them, stale handles after 64 new objects reuse the memory, cross-typed and forged handles, freeing a context inside its own guarded run (tests/c/test_handles.c)" \
  "1 program, 3 runs: plain, ASan + UBSan, valgrind" \
  "every misuse returned SDA_ERR_INVALID_HANDLE; no access to freed memory seen by ASan or memcheck (ASan: $handles_asan; memcheck: $handles_vg)"

# ------------------------------------------------------------------------------------------------
# The table.
elapsed=$(($(date +%s) - started))
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo " + uncommitted changes" || true)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
torch=$("$root/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || echo "at $LIBTORCH")
render() {
  local title=$1
  cat <<EOF
# $title

<!-- Generated by scripts/reliability.sh --$mode ($( [ "$mode" = long ] && echo "make reliability" || echo "make test-reliability")); do not edit by hand. -->

What libsda must survive inside a host process (a DAW, a plugin scanner, a training job) — bad
arguments, threads, crashes while saving, broken installations, real out-of-memory errors — tried on
purpose. Each row is what was tried, how many times, and what happened, as measured by the run that
wrote this file.

Run: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit$dirty; $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, Linux $(uname -r); libtorch $torch; $elapsed s for the script's own part$( [ "$mode" = long ] && echo " (the Rust tests included)").

| # | what is tried | how many times | result |
|---|---|---|---|
EOF
  sort -t $'\t' -k1,1V "$rows" | awk -F '\t' '{ n=$1; sub(/\. .*/, "", n); t=$1; sub(/^[0-9]+\. /, "", t);
    printf "| %s | **%s**: %s | %s | %s |\n", n, t, $2, $3, $4 }' | sed 's/|  *|/| |/g'
  cat <<EOF

How to run: \`make test\` runs the bounded versions (the Rust parts in \`make test-rust\`, the sanitizer
and valgrind parts in \`make test-reliability\`); \`make reliability\` (\`scripts/reliability.sh --long\`)
runs the long versions and rewrites this file. Seeds are printed and in the table: a failure replays
with the same \`SDA_*_SEED\`. Sizes can be set one by one: \`SDA_FUZZ_CALLS\`, \`SDA_THREADS_CALLS\`,
\`SDA_CRASH_KILLS\`, \`SDA_CRASH_SAVES\`, \`SDA_OOM_COUNT\`.
EOF
}

if [ -n "$failed_tests" ]; then
  row "0. FAILED" "reliability tests that failed in this run (their rows are missing): $failed_tests" \
    "-" "see build/reliability/rust-$mode.log"
fi
if [ "$mode" = long ]; then
  render "libsda reliability" >"$root/RELIABILITY.md"
  log "wrote RELIABILITY.md ($(wc -l <"$rows") rows, $elapsed s)"
else
  render "libsda reliability (bounded run)" >"$out/RELIABILITY-bounded.md"
  log "sanitizers and valgrind passed in $elapsed s; table: build/reliability/RELIABILITY-bounded.md"
fi
if [ -n "$failed_tests" ]; then
  log "FAILED: $failed_tests (see $out/rust-$mode.log)"
  exit 1
fi
