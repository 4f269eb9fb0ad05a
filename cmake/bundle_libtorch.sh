#!/usr/bin/env bash
# Copies the libtorch libraries the torch backend needs into an install prefix, with relative run
# paths, so that the prefix runs on a machine without Python or torch (`make install BUNDLE_LIBTORCH=1`;
# run by cmake/CMakeLists.txt at install time):
#
#   usage: bundle_libtorch.sh KIND LIBTORCH_LIB_DIR DEST_LIB_DIR
#
#   KIND cpu   libc10 and libtorch_cpu, and every library they need that is not the system's (from a
#              PyPI wheel: libgomp, and — because the wheel's libtorch_cpu is linked against the CUDA
#              runtime even on the CPU — libcudart and libcupti from the nvidia-* wheels)
#   KIND cuda  the above plus libtorch_cuda, libc10_cuda and libtorch (the C++ API, AOTInductor) with
#              everything they need (cuBLAS, cuDNN, NCCL, cuSPARSELt, NVSHMEM, ...)
#
# DEST_LIB_DIR is <prefix>/lib/sda/libtorch/lib; its parent gets libtorch's `build-version` (the
# version the core reads without loading the libraries). Every copied library gets the run path
# `$ORIGIN`, so they find one another wherever the prefix goes; the backend module's run path is
# `$ORIGIN/sda/libtorch/lib`, and the core finds the bundle there before anything else but a
# libtorch already in the process or one named by SDA_LIBTORCH / hardware.libtorch.
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 cpu|cuda LIBTORCH_LIB_DIR DEST_LIB_DIR" >&2; exit 2; }
kind=$1 src=$(cd "$2" && pwd -P) dest=$3
command -v patchelf >/dev/null || { echo "bundle_libtorch: patchelf is needed (apt-get install patchelf)" >&2; exit 1; }

roots=(libc10.so libtorch_cpu.so)
case "$kind" in
  cpu) ;;
  cuda) roots+=(libc10_cuda.so libtorch_cuda.so libtorch.so) ;;
  *) echo "bundle_libtorch: KIND must be cpu or cuda, not '$kind'" >&2; exit 2 ;;
esac

rm -rf "$dest"
mkdir -p "$dest"
declare -A copied=()
copy() {
  local path=$1 name
  name=$(basename "$path")
  [ -z "${copied[$name]:-}" ] || return 0
  copied[$name]=1
  cp -L "$path" "$dest/$name"
  chmod u+w "$dest/$name"
  patchelf --set-rpath '$ORIGIN' "$dest/$name"
}
for root in "${roots[@]}"; do
  [ -f "$src/$root" ] || { echo "bundle_libtorch: $src has no $root" >&2; exit 1; }
  copy "$src/$root"
  # What the loader resolves for it, minus the system's own libraries (libc, libstdc++, libgcc_s, ...,
  # which every target machine has) and the NVIDIA driver (libcuda, which only the machine can have).
  while read -r name path; do
    case "$path" in
      /lib/*|/lib64/*|/usr/lib/*|/usr/lib64/*|"") continue ;;
    esac
    case "$name" in libcuda.so*|libnvidia-ml.so*) continue ;; esac
    [ -f "$path" ] || { echo "bundle_libtorch: $root needs $name, which the loader does not find ($path)" >&2; exit 1; }
    copy "$path"
  done < <(ldd "$src/$root" | awk '$2 == "=>" {print $1, $3}')
done

# What CUDA libraries open by name at run time, which no NEEDED entry shows: cuDNN's sub-libraries
# (libcudnn_*.so.9, beside libcudnn.so.9) and NVRTC's builtins (beside libnvrtc).
if [ "$kind" = cuda ]; then
  for name in "${!copied[@]}"; do
    case "$name" in libcudnn.so.*|libnvrtc.so.*) ;; *) continue ;; esac
    origin=$(ldd "$src/libtorch_cuda.so" | awk -v n="$name" '$1 == n {print $3}')
    [ -n "$origin" ] || continue
    for sibling in "$(dirname "$origin")"/libcudnn_*.so.* "$(dirname "$origin")"/libnvrtc-builtins*.so*; do
      if [ -f "$sibling" ]; then copy "$sibling"; fi
    done
  done
fi

# The version, as libtorch's own zip writes it (`build-version`), beside lib/.
root_dir=$(dirname "$src")
if [ -f "$root_dir/version.py" ]; then
  sed -n "s/^__version__ = ['\"]\(.*\)['\"]$/\1/p" "$root_dir/version.py" >"$(dirname "$dest")/build-version"
elif [ -f "$root_dir/build-version" ]; then
  cp "$root_dir/build-version" "$(dirname "$dest")/build-version"
fi
[ -s "$(dirname "$dest")/build-version" ] || { echo "bundle_libtorch: $root_dir has no version.py or build-version" >&2; exit 1; }
echo "bundled libtorch $(cat "$(dirname "$dest")/build-version") ($kind): ${#copied[@]} libraries, $(du -sh "$dest" | cut -f1) in $dest"
