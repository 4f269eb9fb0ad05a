#!/usr/bin/env bash
# Check 7 of the GPU truth kit (GPU.md), the C and C++ side: examples/select_device.c and
# examples/guarded_run.cpp, built here, run on cuda.
#   bash examples.sh                  (run.sh sets KIT and RESULTS)
set -u

echo "== select_device cuda"
out=$("$KIT/bin/select_device" cuda 2>&1)
rc=$?
echo "$out"
if [ $rc -eq 0 ] && grep -q '^device: *cuda:0 ' <<<"$out" && ! grep -q 'fell back' <<<"$out"; then
  echo "CHECK 7.c_example PASS examples/select_device cuda: $(grep '^device:' <<<"$out" | sed 's/  */ /g'); $(grep '^budget:' <<<"$out" | sed 's/  */ /g')"
else
  echo "CHECK 7.c_example FAIL examples/select_device cuda exited $rc: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"
fi

# guarded_run.cpp asks for batch 1000 of about 47 MiB a sample and expects it not to fit. On a large
# GPU 47 GiB would fit, so the host caps libtorch's allocator at 5 % of the device (a configuration
# with memory_strategy = custom), as a host sharing the GPU would; the example's own budget stays at
# its 512 MiB default, which its suggested batch must then fit.
config=$RESULTS/examples-cap.toml
printf '[hardware]\nmemory_strategy = "custom"\nmemory_fraction = 0.05\n' >"$config"
echo "== SDA_CONFIG=examples-cap.toml guarded_run"
out=$(SDA_CONFIG=$config "$KIT/bin/guarded_run" 2>&1)
rc=$?
echo "$out"
if [ $rc -eq 0 ] && grep -q '^device: cuda:0$' <<<"$out" && grep -q '^batch 1000: SDA_ERR_OUT_OF_MEMORY' <<<"$out" &&
  grep -q '(suggested): SDA_OK' <<<"$out"; then
  echo "CHECK 7.cpp_example PASS examples/guarded_run on cuda:0 (allocator capped at 5 %): $(grep -E '^batch [0-9]+ \(suggested\)' <<<"$out")"
else
  echo "CHECK 7.cpp_example FAIL examples/guarded_run exited $rc: $(tr '\n' ' ' <<<"$out" | cut -c1-400)"
fi
