#!/usr/bin/env bash
# Installs the Python binding into the project's .venv (as a user would: pip, not from the source
# tree) and runs its pytest suite against an installed libsda prefix.
#
#   usage: bindings/python/run-tests.sh PREFIX     (PREFIX: what `make install PREFIX=...` wrote)
#
# The library is found through SDA_LIBRARY (the binding's documented override), not LD_LIBRARY_PATH.
# pytest is installed into .venv when missing. The venv has torch, so the tests also raise real torch
# out-of-memory errors inside guarded runs.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 PREFIX" >&2; exit 2; }
prefix=$(cd "$1" && pwd -P)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${SDA_PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || { echo "no Python at $python: run scripts/provision.sh (make build) first" >&2; exit 1; }

if ! "$python" -c 'import pytest' 2>/dev/null; then
  echo "python-tests: installing pytest into $("$python" -c 'import sys; print(sys.prefix)')" >&2
  "$python" -m pip install --quiet --disable-pip-version-check pytest >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
cp -r "$here" "$work/python"
rm -rf "$work/python/tests"
# --no-build-isolation: setuptools is already in the venv, so no download is needed to build.
"$python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall "$work/python" >&2

unset LD_LIBRARY_PATH SDA_BACKEND SDA_CONFIG SDA_DEVICE
cd "$work"
SDA_LIBRARY="$prefix/lib/libsda.so.0.2" SDA_TEST_PREFIX="$prefix" SDA_TEST_REPO="$repo" PYTHONDONTWRITEBYTECODE=1 \
  "$python" -m pytest -q -p no:cacheprovider --rootdir "$here" -c "$here/pyproject.toml" "$here/tests"
