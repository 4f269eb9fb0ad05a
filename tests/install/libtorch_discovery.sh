#!/usr/bin/env bash
# Step 8 of tests/install/run.sh, run inside a private mount namespace (`unshare -m`): libtorch found
# at run time by installed prefixes, with the build tree's torch/lib hidden under an empty folder.
#
#   environment: WORK (a scratch folder holding plain/ and bundled/, the two moved prefixes), REPO,
#   TORCH (the build tree's torch folder), TORCH_2_11 (the 2.11 one, or empty), VERSION (2.13.0)
#
#   (a) the bundled prefix alone: `bin/sda probe --device cpu` and a C host
#   (b) the plain prefix with SDA_LIBTORCH (and hardware.libtorch) naming a libtorch elsewhere; a
#       libtorch 2.11 picks lib/libsda_torch-2.11.so when it is installed
#   (c) the plain prefix with no libtorch anywhere: an error naming SDA_LIBTORCH, hardware.libtorch and
#       the versions it accepts
#   (d) a host linked with its own libtorch gets a backend bound to it
#   (e) a Python that imported torch first gets a backend bound to that torch's libtorch
set -euo pipefail
: "${WORK:?}" "${REPO:?}" "${TORCH:?}" "${VERSION:?}"
TORCH_2_11=${TORCH_2_11:-}

die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# A line of a program's own report: `field NAME OUTPUT` (host.c prints "backend: ", "libtorch: ").
field() { printf '%s\n' "$2" | sed -n "s/^$1: //p"; }

mount --make-rprivate /
# A libtorch elsewhere: the build tree's site-packages seen at another path (torch, and the nvidia-*
# libraries its libtorch_cpu needs), then the build tree's own torch/lib hidden.
mkdir -p "$WORK/empty" "$WORK/elsewhere/site-packages"
mount --bind "$(dirname "$TORCH")" "$WORK/elsewhere/site-packages"
mount --bind "$WORK/empty" "$TORCH/lib"
other="$WORK/elsewhere/site-packages/torch/lib"
if [ -n "$TORCH_2_11" ]; then
  mkdir -p "$WORK/elsewhere-2.11/site-packages"
  mount --bind "$(dirname "$TORCH_2_11")" "$WORK/elsewhere-2.11/site-packages"
  mount --bind "$WORK/empty" "$TORCH_2_11/lib"
fi
[ ! -e "$TORCH/lib/libtorch_cpu.so" ] || die "the build tree's libtorch is still visible"

# build_host PREFIX OUT [LINK FLAGS...]: tests/cmake_consumer/host.c, linked as a C++ program.
build_host() {
  local p=$1 out=$2
  shift 2
  cc -std=c11 -Wall -Wextra -Werror -c -o "$out.o" "$REPO/tests/cmake_consumer/host.c" -I"$p/include"
  c++ -o "$out" "$out.o" -L"$p/lib" -lsda -Wl,-rpath,"$p/lib" "$@"
}

echo "    (a) the bundled prefix alone"
B=$WORK/bundled
out=$("$B/bin/sda" probe --device cpu --budget 64MiB --max 4 2>&1) || die "bundled bin/sda probe --device cpu failed: $out"
printf '%s\n' "$out" | tail -3 | sed 's/^/      /'
build_host "$B" "$WORK/host_bundled"
out=$("$WORK/host_bundled" 2>&1) || die "a host of the bundled prefix failed: $out"
printf '%s\n' "$out" | sed 's/^/      /'
[ "$(field backend "$out")" = "$B/lib/libsda_torch.so" ] || die "bundled: backend $(field backend "$out")"
[ "$(field libtorch "$out")" = "$B/lib/sda/libtorch/lib/libtorch_cpu.so ($VERSION)" ] ||
  die "bundled: libtorch $(field libtorch "$out")"

echo "    (b) the plain prefix with SDA_LIBTORCH=$other"
P=$WORK/plain
out=$(SDA_LIBTORCH=$other "$P/bin/sda" doctor 2>&1) || die "plain bin/sda doctor with SDA_LIBTORCH failed: $out"
build_host "$P" "$WORK/host_plain"
out=$(SDA_LIBTORCH=$other "$WORK/host_plain" 2>&1) || die "plain host with SDA_LIBTORCH failed: $out"
printf '%s\n' "$out" | sed 's/^/      /'
[ "$(field backend "$out")" = "$P/lib/libsda_torch.so" ] || die "SDA_LIBTORCH: backend $(field backend "$out")"
[ "$(field libtorch "$out")" = "$other/libtorch_cpu.so ($VERSION)" ] || die "SDA_LIBTORCH: libtorch $(field libtorch "$out")"
# The config key does the same.
printf '[hardware]\nlibtorch = "%s"\n' "$other" >"$WORK/libtorch.toml"
out=$(SDA_CONFIG=$WORK/libtorch.toml "$WORK/host_plain" 2>&1) || die "plain host with hardware.libtorch failed: $out"
[ "$(field libtorch "$out")" = "$other/libtorch_cpu.so ($VERSION)" ] || die "hardware.libtorch: libtorch $(field libtorch "$out")"
echo "      hardware.libtorch (SDA_CONFIG): the same libtorch"
if [ -n "$TORCH_2_11" ]; then
  other_2_11="$WORK/elsewhere-2.11/site-packages/torch/lib"
  out=$(SDA_LIBTORCH=$other_2_11 "$WORK/host_plain" 2>&1) || die "plain host with a libtorch 2.11 failed: $out"
  printf '%s\n' "$out" | sed 's/^/      /'
  [ "$(field backend "$out")" = "$P/lib/libsda_torch-2.11.so" ] || die "libtorch 2.11: backend $(field backend "$out")"
  case "$(field libtorch "$out")" in
    "$other_2_11/libtorch_cpu.so (2.11."*) ;;
    *) die "libtorch 2.11: libtorch $(field libtorch "$out")" ;;
  esac
else
  echo "      (no lib/libsda_torch-2.11.so installed: \`make build-backend-2.11\` first to check it)"
fi

echo "    (c) the plain prefix with no libtorch anywhere"
if out=$("$P/bin/sda" probe --device cpu --budget 64MiB --max 4 2>&1); then die "plain bin/sda probe worked without a libtorch: $out"; fi
for needle in SDA_LIBTORCH hardware.libtorch "$VERSION (libsda_torch.so)"; do
  grep -qF -- "$needle" <<<"$out" || die "the error does not name '$needle': $out"
done
printf '%s\n' "$out" | grep -m1 -F SDA_LIBTORCH | fold -s -w 110 | sed 's/^/      /'
if out=$("$WORK/host_plain" 2>&1); then die "plain host worked without a libtorch: $out"; fi
grep -q SDA_ERR_BACKEND_UNAVAILABLE <<<"$out" && grep -qF SDA_LIBTORCH <<<"$out" || die "plain host without libtorch: $out"

echo "    (d) a host linked with its own libtorch ($other)"
build_host "$P" "$WORK/host_own_libtorch" -Wl,--no-as-needed -L"$other" -ltorch_cpu -lc10 -Wl,-rpath,"$other"
readelf -d "$WORK/host_own_libtorch" | grep -q 'NEEDED.*libtorch_cpu.so' || die "the host does not link libtorch"
out=$("$WORK/host_own_libtorch" 2>&1) || die "a host with its own libtorch failed: $out"
[ "$(field libtorch "$out")" = "$other/libtorch_cpu.so ($VERSION)" ] || die "own libtorch: the backend bound to $(field libtorch "$out")"
echo "      backend bound to the host's $(field libtorch "$out")"

echo "    (e) a Python that imported torch first (torch from $WORK/elsewhere/site-packages)"
out=$(PYTHONPATH="$WORK/elsewhere/site-packages:$REPO/bindings/python/src" SDA_LIBRARY="$P/lib/libsda.so" \
  "$REPO/.venv/bin/python" -c '
import os, torch, sda
details = sda.Context().backend_load()
print("torch:", os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
print("libtorch:", details.libtorch_path)
print("backend:", details.module_path)
' 2>&1) || die "Python with torch imported first failed: $out"
printf '%s\n' "$out" | sed 's/^/      /'
[ "$(field torch "$out")" = "$other/libtorch_cpu.so" ] || die "Python imported another torch: $(field torch "$out")"
[ "$(field libtorch "$out")" = "$other/libtorch_cpu.so" ] || die "Python: the backend is bound to $(field libtorch "$out")"
