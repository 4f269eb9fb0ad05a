#!/usr/bin/env bash
# Issue 12 item 4: real audio models from PyPI (HTDemucs from demucs, SNAC), a CPU training step, each
# under a few RLIMIT_AS budgets: libsda's probe vs Accelerate's find_executable_batch_size vs a
# Lightning-style doubling + bisection, every cell in its own child process, the true maximum searched
# separately. Prints a Markdown table (bench/real_models.py does the work).
#
#   make bench-models                      (builds first)
#   bash bench/real_models.sh [ARGS...]    ARGS go to real_models.py (--help lists them)
#
# Environment:
#   SDA_LIBRARY   the libsda.so to measure (default: this tree's target/release/libsda.so; its
#                 libsda_torch.so must lie beside it)
#   SDA_BINDING   the Python binding's source to install (default: this tree's bindings/python)
#   BENCH_VENV    the bench's virtual env (default: build/bench-models/venv)
#   BENCH_SCRIPT  the bench to run there, relative to the tree (default: bench/real_models.py)
#
# The venv: made from the project's .venv Python (scripts/provision.sh: torch==2.13.0, the libtorch
# the backend module links). It sees that torch through a .pth file instead of a second copy, so the
# Python torch and libsda_torch.so share one libtorch in the process (one CPU allocator, which the
# probe's counting allocator wraps). Everything else is installed here, pinned, with --no-deps (the
# full resolved set is listed, so pip never resolves torch again; demucs' own requirements name
# torchaudio, which has no build for torch 2.13, and HTDemucs does not import it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/provision.sh" >/dev/null
project_python=$root/.venv/bin/python
venv=${BENCH_VENV:-$root/build/bench-models/venv}
library=${SDA_LIBRARY:-$root/target/release/libsda.so}
binding=${SDA_BINDING:-$root/bindings/python}
[ -f "$library" ] || { echo "no libsda at $library: run make build (or set SDA_LIBRARY)" >&2; exit 1; }
[ -f "$(dirname "$library")/libsda_torch.so" ] || { echo "no libsda_torch.so beside $library" >&2; exit 1; }

# Pinned: the models, Accelerate, and everything they import (resolved once with pip for this torch).
packages=(
  demucs==4.1.0 snac==1.2.1 accelerate==1.15.0
  encodec==0.1.1  # bench/model_files.py (it imports torchaudio, which has no build for torch 2.13)
  transformers==5.24.0 tokenizers==0.23.3 regex==2026.11.19  # bench/new_user.py --model ast
  einops==0.8.2 julius==0.2.8 numpy==2.4.6 pyyaml==6.0.4 tqdm==4.70.1 packaging==26.4 psutil==7.2.2
  safetensors==0.8.0 huggingface_hub==2.4.0 click==8.5.1 hf-xet==1.8.0 httpx2==2.16.2
  httpcore2==2.16.2 anyio==4.16.0 idna==3.20 truststore==0.10.5 h11==0.16.0
  setuptools==84.2.1  # the project venv's: builds the binding (a new venv's own has no bdist_wheel)
)

if [ ! -x "$venv/bin/python" ]; then
  echo "bench-models: creating $venv" >&2
  "$project_python" -m venv "$venv" >&2
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
project_site=$("$project_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# After the venv's own site-packages: the bench's pins win, torch comes from the project's venv.
printf '%s\n' "$project_site" >"$site/libsda-project-venv.pth"
stamp="$site/.bench-models-packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "bench-models: installing ${packages[*]}" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${packages[@]}" >&2
  printf '%s' "${packages[*]}" >"$stamp"
fi
# The binding, from a copy (setuptools writes build/ and *.egg-info next to what it builds).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$binding" "$work/python"
rm -rf "$work/python/tests"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall "$work/python" >&2

"$venv/bin/python" -c 'import torch, os, sys; sys.exit(0 if torch.__file__.startswith(sys.argv[1]) else
  f"torch comes from {torch.__file__}, not the project venv {sys.argv[1]}")' "$project_site"

unset SDA_BACKEND SDA_CONFIG SDA_DEVICE
export SDA_LIBRARY="$library" PYTHONDONTWRITEBYTECODE=1
# BENCH_SCRIPT: another bench in this venv (bench/model_files.py: the models as model files).
exec "$venv/bin/python" "$root/${BENCH_SCRIPT:-bench/real_models.py}" "$@"
