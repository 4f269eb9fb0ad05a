#!/usr/bin/env bash
# Builds libsda's GPU truth kit (issue 15, GPU.md) into one relocatable folder, by default
# build/gpu-kit/: `make gpu-kit` calls it after `make build` and `make build-backend-2.11`.
#
#   bash scripts/gpu-kit.sh [OUT_DIR]
#
# The kit holds, stripped: lib/libsda.so.0.2 (the core), lib/libsda_torch.so (the default backend
# module) and lib/libsda_torch-2.11.so (the module for libtorch 2.11, when target/torch-2.11 has it:
# GPU machines of this project run torch 2.11), bin/sda (the CLI), the C checks of tests/gpu-kit and
# the examples and bench programs, compiled here against include/sda.h with the rpath $ORIGIN/../lib,
# python/sda (the binding), checks/ (the Python and shell checks), run.sh, GPU.md and MANIFEST.txt.
# Nothing in it names this checkout; libtorch comes from the GPU machine (SDA_LIBTORCH, set by run.sh
# from that machine's `python3 -c 'import torch'`). Fails when the folder reaches 64 MiB.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kit=${1:-$root/build/gpu-kit}
release=$root/target/release
module_2_11=$root/target/torch-2.11/release/libsda_torch.so
src=$root/tests/gpu-kit
limit=$((64 << 20))
log() { printf 'gpu-kit: %s\n' "$*" >&2; }

for f in "$release/libsda.so" "$release/libsda_torch.so" "$release/sda"; do
  [ -f "$f" ] || { log "$f is missing: run make build first"; exit 1; }
done
soname=$(objdump -p "$release/libsda.so" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libsda.so.0.2 ] || log "note: libsda's SONAME is $soname (run.sh and the binding expect libsda.so.0.2)"

# The libtorch version a module was built against: its exported record sda_torch_built_libtorch
# ("VERSION\nDIR"), read from the file without loading it.
built_version() {
  local module=$1 line value ndx addr off
  line=$(readelf -W --dyn-syms "$module" | awk '$8 == "sda_torch_built_libtorch" {print $2, $7; exit}')
  [ -n "$line" ] || { echo unknown; return; }
  value=$((16#${line% *}))
  ndx=${line#* }
  read -r addr off < <(readelf -SW "$module" | sed 's/\[ */[/' | awk -v n="[$ndx]" '$1 == n {print $4, $5}')
  dd if="$module" bs=1 skip=$((value - 16#$addr + 16#$off)) count=64 2>/dev/null | tr '\0' '\n' | head -n 1
}

rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/lib" "$kit/python" "$kit/checks"

# Libraries: the core under its SONAME (a plain file, no symbolic links, so that any copy keeps it).
cp "$release/libsda.so" "$kit/lib/$soname"
cp "$release/libsda_torch.so" "$kit/lib/libsda_torch.so"
modules="module lib/libsda_torch.so libtorch $(built_version "$release/libsda_torch.so")"
if [ -f "$module_2_11" ]; then
  cp "$module_2_11" "$kit/lib/libsda_torch-2.11.so"
  modules="$modules
module lib/libsda_torch-2.11.so libtorch $(built_version "$module_2_11")"
else
  log "note: $module_2_11 is not built (make build-backend-2.11): the kit has only the default module," \
    "and run.sh will say that its version may not match the GPU machine's torch"
fi
cp "$release/sda" "$kit/bin/sda"

# C and C++ programs, against the header in the tree, finding libsda beside the kit's bin/.
CFLAGS=(-O2 -Wall -Wextra -I"$root/include")
LINK=(-L"$kit/lib" -l:"$soname" -Wl,-rpath,'$ORIGIN/../lib' -Wl,--enable-new-dtags)
cc_prog() { # cc_prog OUT SOURCE [EXTRA...]
  local out=$1 source=$2
  shift 2
  cc -std=c11 -D_GNU_SOURCE "${CFLAGS[@]}" "$source" "${LINK[@]}" "$@" -o "$kit/bin/$out"
}
cc_prog gpu_select "$src/select.c"
cc_prog gpu_device "$src/device.c" -lm
cc_prog gpu_guard_oom "$src/guard_oom.c" -ldl
cc_prog gpu_probe_truth "$src/probe_truth.c"
cc_prog gpu_bench_cuda "$src/bench_cuda.c"
cc_prog select_device "$root/examples/select_device.c"
for b in startup_sda calls guard_overhead; do cc_prog "$b" "$root/bench/$b.c"; done
c++ -std=c++17 "${CFLAGS[@]}" "$root/examples/guarded_run.cpp" "${LINK[@]}" -o "$kit/bin/guarded_run"

# The binding (pure Python; SDA_LIBRARY names the kit's libsda) and the checks.
cp -r "$root/bindings/python/src/sda" "$kit/python/sda"
find "$kit/python" -name __pycache__ -prune -exec rm -rf {} +
rm -f "$kit/python/sda/_lib/"*.so*
for f in kitpy.py memory.py strategy.py model.py binding.py probe_check.py probe.sh examples.sh bench.sh; do
  cp "$src/$f" "$kit/checks/$f"
done
cp "$src/run.sh" "$kit/run.sh"
cp "$root/GPU.md" "$kit/GPU.md"
chmod +x "$kit/run.sh" "$kit"/checks/*.sh

strip --strip-unneeded "$kit"/bin/* "$kit"/lib/*

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$root" diff --quiet HEAD 2>/dev/null || commit="$commit+uncommitted changes"
glibc=$(objdump -T "$kit"/bin/* "$kit"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -u | tail -n 1)
glibcxx=$(objdump -T "$kit"/bin/* "$kit"/lib/* 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' | sort -V -u | tail -n 1)
{
  echo "built $(date -u '+%Y-%m-%d %H:%M UTC') on $(. /etc/os-release && echo "$PRETTY_NAME"), $(uname -m)"
  echo "commit $commit"
  echo "libsda $(sed -n 's/^#define SDA_VERSION_STRING "\(.*\)"/\1/p' "$root/include/sda.h") ($soname)"
  echo "$modules"
  echo "needs ${glibc:-GLIBC_?} and ${glibcxx:-GLIBCXX_?} (glibc and libstdc++ of the GPU machine at least these)"
} >"$kit/MANIFEST.txt"
(cd "$kit" && find . -type f ! -name MANIFEST.files | sed 's|^\./||' | sort) >"$kit/MANIFEST.files"

size=$(du -sb "$kit" | awk '{print $1}')
log "built $kit: $((size / 1024)) KiB in $(find "$kit" -type f | wc -l) files"
sed 's/^/gpu-kit:   /' "$kit/MANIFEST.txt" >&2
if [ "$size" -ge "$limit" ]; then
  log "the kit is $size bytes, over the 64 MiB it may have"
  exit 1
fi
