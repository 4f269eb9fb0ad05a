#!/usr/bin/env bash
# Provisions what the build and the tests need, idempotently, and prints the LIBTORCH directory.
#
# - libtorch: an existing $LIBTORCH is respected; otherwise torch==2.13.0 (the version tch 0.26 is built
#   for) is installed from PyPI into the project-local, git-ignored virtual env .venv, reused when present.
# - Debian packages the tests need (cmake, pkg-config, valgrind), installed only when missing and
#   only as root.
# - cargo-nextest, when missing.
set -euo pipefail

TORCH_VERSION=2.13.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

log() { printf 'provision: %s\n' "$*" >&2; }

need_debs=()
# valgrind: the reliability suite's memcheck runs (scripts/reliability.sh).
for tool_pkg in cmake:cmake pkg-config:pkg-config valgrind:valgrind; do
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
  log "installing torch==$TORCH_VERSION into $venv (about 4.7 GB, about a minute)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" >&2
fi
torch_dir=$("$venv/bin/python" -c 'import os, importlib.util as u; print(os.path.dirname(u.find_spec("torch").origin))')
printf '%s\n' "$torch_dir"
