#!/usr/bin/env bash
# Provisions what the build and the tests need, idempotently, and prints the LIBTORCH directory.
#
# - libtorch: an existing $LIBTORCH is respected; otherwise torch==2.13.0 (the version tch 0.26 is built
#   for) is installed from PyPI into the project-local, git-ignored virtual env .venv, reused when present.
# - `--torch VERSION` (e.g. `--torch 2.11.0`, for the second backend module crates/sda_torch_2_11, tch
#   0.24): that torch instead, in its own virtual env .venv-MAJOR.MINOR (.venv-2.11); $LIBTORCH is not
#   consulted (it names the default libtorch). The default version still goes to .venv.
# - Debian packages the tests need (cmake, pkg-config, valgrind, patchelf), installed only when missing
#   and only as root.
# - cargo-nextest, when missing.
set -euo pipefail

DEFAULT_TORCH_VERSION=2.13.0
TORCH_VERSION=$DEFAULT_TORCH_VERSION
if [ "${1:-}" = --torch ]; then
  [ -n "${2:-}" ] || { printf 'provision: usage: %s [--torch VERSION]\n' "$0" >&2; exit 2; }
  TORCH_VERSION=$2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
if [ "$TORCH_VERSION" != "$DEFAULT_TORCH_VERSION" ]; then
  venv="$root/.venv-$(cut -d. -f1-2 <<<"$TORCH_VERSION")"
  unset LIBTORCH
fi

log() { printf 'provision: %s\n' "$*" >&2; }

need_debs=()
# valgrind: the reliability suite's memcheck runs (scripts/reliability.sh). patchelf: `make install`
# gives the installed backend modules and a bundled libtorch relative run paths (cmake/CMakeLists.txt).
for tool_pkg in cmake:cmake pkg-config:pkg-config valgrind:valgrind patchelf:patchelf; do
  tool=${tool_pkg%%:*}; pkg=${tool_pkg##*:}
  command -v "$tool" >/dev/null 2>&1 || need_debs+=("$pkg")
done
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${need_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need_debs[@]}" >&2
  else
    log "missing ${need_debs[*]}: install them (sudo apt-get install ${need_debs[*]}) and run again"
    exit 1
  fi
fi

# The tests run under cargo-nextest: each test in its own process, so "libtorch is not loaded yet" is
# a real state per test.
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest >&2
fi

if [ -n "${LIBTORCH:-}" ]; then
  [ -d "$LIBTORCH/lib" ] || { log "LIBTORCH=$LIBTORCH has no lib/ directory"; exit 1; }
  printf '%s\n' "$LIBTORCH"
  exit 0
fi

torch_dir="$venv/lib/python3.11/site-packages/torch"
installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
if [ "$installed" != "$TORCH_VERSION" ]; then
  log "installing torch==$TORCH_VERSION into $venv (about 4.7 GB with its CUDA packages, a minute or more)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  # --no-cache-dir: pip would otherwise keep another copy of the ~3 GB of wheels in ~/.cache.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==$TORCH_VERSION" >&2
  # A second version shares most CUDA packages with the default one byte for byte (measured for 2.11
  # beside 2.13: 1.4 GB of 4.9 GB): one copy on disk, through hard links (util-linux's `hardlink`,
  # which links only files of identical content). pip replaces files rather than writing into them,
  # so neither environment can change the other.
  default_venv="$root/.venv"
  if [ "$venv" != "$default_venv" ] && [ -d "$default_venv/lib/python3.11/site-packages" ] && command -v hardlink >/dev/null 2>&1; then
    hardlink --quiet --ignore-time --minimum-size 1M \
      "$default_venv/lib/python3.11/site-packages" "$venv/lib/python3.11/site-packages" >&2 || true
  fi
fi
torch_dir=$("$venv/bin/python" -c 'import os, importlib.util as u; print(os.path.dirname(u.find_spec("torch").origin))')
printf '%s\n' "$torch_dir"
