#!/usr/bin/env bash
# `make test-gpu-kit` (issue 15): the GPU truth kit, copied to a temporary folder elsewhere and run
# there on this machine, which has no NVIDIA GPU: it must exit 0, say that there is no NVIDIA GPU,
# print no PASS for any check (so nothing here counts as a GPU pass), pass its self-check (every
# program finds the kit's libsda from the new place) and be under 64 MiB.
#   bash tests/gpu-kit/test-kit.sh [KIT_DIR]         (default build/gpu-kit)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
kit=${1:-$root/build/gpu-kit}
fail() { printf 'test-gpu-kit: FAIL: %s\n' "$*" >&2; exit 1; }
[ -f "$kit/run.sh" ] || fail "$kit/run.sh is missing: run make gpu-kit"

size=$(du -sb "$kit" | awk '{print $1}')
[ "$size" -lt $((64 << 20)) ] || fail "the kit is $size bytes, not under 64 MiB"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$kit" "$tmp/moved kit"
env=(env -u OUT)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "test-gpu-kit: this machine has an NVIDIA GPU; this test checks the kit's no-GPU path only" \
    "(SDA_GPU_KIT_FORCE_NO_GPU=1); run bash build/gpu-kit/run.sh for the GPU checks"
  env+=(SDA_GPU_KIT_FORCE_NO_GPU=1)
fi
# From another working directory, so that nothing is found relative to the checkout.
out=$(cd / && "${env[@]}" bash "$tmp/moved kit/run.sh" 2>&1)
rc=$?
printf '%s\n' "$out" | sed 's/^/  | /'
[ $rc -eq 0 ] || fail "run.sh exited $rc"
grep -q 'no NVIDIA GPU' <<<"$out" || fail "run.sh did not say that there is no NVIDIA GPU"
! grep -qE '\bPASS\b' <<<"$out" || fail "run.sh printed a PASS without a GPU: $(grep -E '\bPASS\b' <<<"$out" | head -n 3)"
! grep -q '^CHECK ' <<<"$out" || fail "run.sh ran a GPU check without a GPU"
grep -q 'SELF libraries ok' <<<"$out" || fail "the moved kit's programs do not find its libsda"
! grep -q '^SELF .* FAILED' <<<"$out" || fail "the kit's self-check failed"
[ -s "$tmp/moved kit/results/table.txt" ] && grep -q 'NO NVIDIA GPU' "$tmp/moved kit/results/table.txt" \
  || fail "results/table.txt does not say NO NVIDIA GPU"
! grep -qE '\bPASS\b' "$tmp/moved kit/results/table.txt" || fail "results/table.txt holds a PASS"
echo "test-gpu-kit: ok: kit $((size / 1024)) KiB, relocated to $tmp/moved kit, no GPU here, no PASS, exit 0"
