#!/usr/bin/env bash
# The wheel (`make wheel`) in fresh Python environments, as a user installs it: next to torch, without
# SDA_LIBRARY, SDA_LIBTORCH or LD_LIBRARY_PATH, from a folder outside the repository (`make test-wheel`).
#
#   usage: tests/wheel/run.sh WHEEL PREFIX    (PREFIX: the same build installed, for its sda.h)
#
# Each environment is a new `python3 -m venv` with the wheel installed by pip. Its torch is the
# project's provisioned PyPI install (`.venv` for 2.13, `.venv-2.11` for 2.11), hard-linked into the
# new environment's site-packages instead of downloaded a second time (3 GB each): the same files pip
# installed, in an environment of their own. Checks:
#   1. torch 2.13: `python -m sda info`; `python -m sda doctor --verbose` binds the backend to this
#      environment's torch (not the build tree's); a probe of a torch callable through the binding,
#      with and without `import torch` before the first call.
#   2. torch 2.11: the same wheel chooses its 2.11 module (libsda_torch-2.11.so) for it.
#   3. a torch the wheel has no module for — a test double: a copy of torch 2.13 whose version.py is
#      rewritten to say 2.12.0 — fails with the message that names the versions the wheel accepts.
#   4. the binding's pytest suite against the installed wheel and its bundled libsda (not the source
#      tree, no SDA_LIBRARY), in the torch 2.13 environment.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 WHEEL PREFIX" >&2; exit 2; }
wheel=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -f "$wheel" ] || { echo "no wheel at $1 (make wheel)" >&2; exit 2; }
prefix=$(cd "$2" && pwd -P)
[ -f "$prefix/include/sda.h" ] || { echo "$2 is not an installed libsda prefix" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf 'wheel-test: %s\n' "$*" >&2; }
fail() { printf 'wheel-test: FAILED: %s\n' "$*" >&2; exit 1; }

# A fresh environment at $1 with the wheel and the torch of the venv $2 (hard links; see above).
make_env() {
  local env=$1 source_venv=$2 entry name
  python3 -m venv "$env"
  local sp
  sp=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  for entry in "$source_venv"/lib/python3.11/site-packages/*; do
    name=$(basename "$entry")
    # What the new environment has of its own (pip, setuptools) stays its own.
    [ -e "$sp/$name" ] && continue
    case $name in
      # The project's development install of the binding: the wheel replaces it.
      sda | sda-* | __editable__*) continue ;;
    esac
    cp -al "$entry" "$sp/"
  done
  "$env/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-index "$wheel" >&2
}

# Runs the environment's python with a clean environment (nothing of this shell's SDA_* or
# LD_LIBRARY_PATH), in a scratch folder outside the repository.
in_env() {
  local env=$1
  shift
  (cd "$work/scratch" && env -i HOME="$work/home" PATH="$env/bin:/usr/bin:/bin" LANG=C.UTF-8 "$env/bin/python" "$@")
}

mkdir -p "$work/scratch" "$work/home"
site() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

# The probe of a torch callable through the binding: prints "library_path backend_module libtorch_path
# max_batch". $1: "import-torch-first" or "sda-first".
probe_script='
import sys
order = sys.argv[1]
if order == "import-torch-first":
    import torch
import sda
ctx = sda.Context()
ctx.select_device("cpu")
import torch
weight = torch.randn(16, 2, 65)
def step(batch):
    x = torch.randn(batch, 2, 4096)
    torch.nn.functional.conv1d(x, weight, padding=32).relu().sum()
result = ctx.probe_batch(step, max_batch=16, budget_bytes=256 << 20)
info = sda.backend_info()
print(sda.library_path(), info.module_path, info.libtorch_path, result.max_batch)
'

check_probe() {
  local env=$1 order=$2 module=$3 sp out lib_path module_path libtorch_path max_batch
  sp=$(site "$env")
  out=$(in_env "$env" -c "$probe_script" "$order") || fail "probe of a torch callable ($order) in $env"
  read -r lib_path module_path libtorch_path max_batch <<<"$(tail -1 <<<"$out")"
  [ "$lib_path" = "$sp/sda/_lib/libsda.so.0.2" ] || fail "libsda came from $lib_path, not the wheel"
  [ "$module_path" = "$sp/sda/_lib/$module" ] || fail "backend module $module_path, expected $module"
  [ "$libtorch_path" = "$sp/torch/lib/libtorch_cpu.so" ] || fail "libtorch $libtorch_path is not this environment's"
  [ "$max_batch" -ge 1 ] || fail "probe answered $max_batch"
  step "probe of a torch callable ($order): max_batch $max_batch, $module, libtorch of the environment"
}

step "1. torch 2.13 from $repo/.venv"
env13=$work/env-2.13
make_env "$env13" "$repo/.venv"
sp13=$(site "$env13")
out=$(in_env "$env13" -m sda info) || fail "python -m sda info: $out"
grep -q '^Device: ' <<<"$out" || fail "python -m sda info printed no device: $out"
step "python -m sda info: $(head -1 <<<"$out")"
out=$(in_env "$env13" -m sda doctor --verbose) || fail "python -m sda doctor: $out"
expected="Torch backend: $sp13/sda/_lib/libsda_torch.so (libtorch 2.13.0 at $sp13/torch/lib/libtorch_cpu.so"
grep -qF "$expected" <<<"$out" || fail "doctor did not bind the backend to this environment's torch: $(grep 'Torch backend' <<<"$out")"
step "python -m sda doctor: the backend uses $sp13/torch/lib"
check_probe "$env13" sda-first libsda_torch.so
check_probe "$env13" import-torch-first libsda_torch.so

in_wheel() { python3 -c 'import sys, zipfile; sys.exit(sys.argv[2] not in zipfile.ZipFile(sys.argv[1]).namelist())' "$wheel" "$1"; }
if [ -d "$repo/.venv-2.11" ] && in_wheel sda/_lib/libsda_torch-2.11.so; then
  step "2. torch 2.11 from $repo/.venv-2.11"
  env11=$work/env-2.11
  make_env "$env11" "$repo/.venv-2.11"
  sp11=$(site "$env11")
  out=$(in_env "$env11" -m sda doctor --verbose) || fail "python -m sda doctor (2.11): $out"
  expected="Torch backend: $sp11/sda/_lib/libsda_torch-2.11.so (libtorch 2.11.0 at $sp11/torch/lib/libtorch_cpu.so"
  grep -qF "$expected" <<<"$out" || fail "doctor (2.11): $(grep 'Torch backend' <<<"$out")"
  step "python -m sda doctor: the 2.11 module, bound to $sp11/torch/lib"
  check_probe "$env11" sda-first libsda_torch-2.11.so
else
  fail "the 2.11 check needs .venv-2.11 and a wheel with libsda_torch-2.11.so (make build-backend-2.11 wheel)"
fi

step "3. a torch the wheel has no module for (test double: torch 2.13 relabelled 2.12.0)"
env12=$work/env-2.12-relabelled
make_env "$env12" "$repo/.venv"
sp12=$(site "$env12")
# Replace the hard link, not the shared file behind it.
rm "$sp12/torch/version.py"
printf "__version__ = '2.12.0'\ngit_version = 'relabelled-for-a-test'\ncuda = '13.0'\n" >"$sp12/torch/version.py"
set +e
out=$(in_env "$env12" -m sda doctor 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] || fail "doctor with an unsupported torch exited $rc, expected 2 (an error): $out"
for needle in "libtorch 2.12.0" "2.13.0 (libsda_torch.so)" "2.11.0 (libsda_torch-2.11.so)" SDA_LIBTORCH; do
  grep -qF "$needle" <<<"$out" || fail "the unsupported-version message lacks \"$needle\": $out"
done
step "python -m sda doctor: exit 2, $(grep -o 'is libtorch 2.12.0[^;]*' <<<"$out" | head -1)"
step "4. pytest against the installed wheel (torch 2.13 environment)"
binding=$repo/bindings/python
# pytest came with the project's environment when `make test-python` installed it there; else PyPI.
"$env13/bin/python" -c 'import pytest' 2>/dev/null ||
  "$env13/bin/python" -m pip install --quiet --disable-pip-version-check pytest >&2
(cd "$work/scratch" && env -i HOME="$work/home" PATH="$env13/bin:/usr/bin:/bin" LANG=C.UTF-8 \
  SDA_TEST_PREFIX="$prefix" SDA_TEST_REPO="$repo" SDA_TEST_LIBRARY_DIR="$sp13/sda/_lib" \
  PYTHONDONTWRITEBYTECODE=1 "$env13/bin/python" -m pytest -q -p no:cacheprovider \
  --rootdir "$binding" -c "$binding/pyproject.toml" "$binding/tests") || fail "pytest against the wheel"
step "ok"
