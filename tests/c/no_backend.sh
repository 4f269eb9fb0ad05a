#!/usr/bin/env bash
# Runs test_no_backend from a directory that holds only the program and libsda.so: the backend module
# is "moved away". The program is linked with rpath $ORIGIN, so it loads this copy of libsda.
set -euo pipefail
exe=$1 lib=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$exe" "$dir/"
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
cp -L "$lib" "$dir/$soname"
"$dir/$(basename "$exe")"
