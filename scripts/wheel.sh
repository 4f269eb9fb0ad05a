#!/usr/bin/env bash
# Builds the Python package as a wheel that bundles libsda, its torch backend modules and the `sda`
# program (`make wheel`, after `make build` and, for the 2.11 module, `make build-backend-2.11`).
#
#   usage: scripts/wheel.sh OUT_DIR        prints the wheel's path
#
# The wheel (`sda-<version>-py3-none-linux_x86_64.whl`) holds, in sda/_lib/:
#   libsda.so.<abi>        the core (the binding loads it when $SDA_LIBRARY is not set)
#   libsda_torch.so        the backend for libtorch 2.13 (tch 0.26)
#   libsda_torch-2.11.so   the backend for libtorch 2.11 (tch 0.24), when it has been built
#   sda                    the command-line program (`python -m sda`)
# It bundles no libtorch: libsda uses the torch installed in the same environment (the binding names
# it, `sda._libtorch`) and chooses the module built for that torch's version. The modules' run paths
# are removed: they name this build tree's torch, and libsda preloads the libtorch it chose before it
# opens a module, so a run path would only ever find the wrong one.
# py3-none: the package is ctypes, not an extension, so any Python 3.9+ takes it; linux_x86_64, not
# manylinux: the libraries are built on this machine's glibc (2.36) and are not audited against a
# manylinux policy.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
release=$repo/target/release
backend_2_11=$repo/target/torch-2.11/release/libsda_torch.so
python=$repo/.venv/bin/python
log() { printf 'wheel: %s\n' "$*" >&2; }

for f in "$release/libsda.so" "$release/libsda_torch.so" "$release/sda"; do
  [ -f "$f" ] || { log "$f is missing: run make build first"; exit 1; }
done
[ -x "$python" ] || { log "no Python at $python: run scripts/provision.sh (make build) first"; exit 1; }
command -v patchelf >/dev/null || { log "patchelf is needed (apt-get install patchelf)"; exit 1; }

soname=$(objdump -p "$release/libsda.so" | awk '$1 == "SONAME" {print $2}')
[ -n "$soname" ] || { log "$release/libsda.so has no SONAME"; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$repo/bindings/python" "$stage/python"
rm -rf "$stage/python/tests" "$stage/python/build" "$stage/python/src/"*.egg-info
lib=$stage/python/src/sda/_lib
rm -f "$lib"/*.so* "$lib/sda"
cp "$release/libsda.so" "$lib/$soname"
cp "$release/libsda_torch.so" "$lib/libsda_torch.so"
if [ -f "$backend_2_11" ]; then
  cp "$backend_2_11" "$lib/libsda_torch-2.11.so"
else
  log "no libtorch 2.11 module ($backend_2_11; make build-backend-2.11): the wheel takes torch 2.13 only"
fi
cp "$release/sda" "$lib/sda"
for module in "$lib"/libsda_torch*.so; do
  patchelf --remove-rpath "$module"
done
# The platform tag (see above); setuptools reads it from setup.cfg next to pyproject.toml.
printf '[bdist_wheel]\nplat_name = linux_x86_64\npython_tag = py3\n' >"$stage/python/setup.cfg"

rm -f "$out"/sda-*.whl
# --no-build-isolation: setuptools is in the project's .venv, so nothing is downloaded to build.
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  --wheel-dir "$out" "$stage/python" >&2
wheel=$(ls "$out"/sda-*.whl)
log "built $wheel ($(du -k "$wheel" | cut -f1) KiB)"
printf '%s\n' "$wheel"
