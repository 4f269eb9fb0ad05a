#!/usr/bin/env bash
# Stands in for the target's C/C++ compiler and archiver in `make cross-check`. Type-checking never
# links, but the build scripts of tch's dependencies (zstd-sys, bzip2-sys through zip) compile C for
# the target, which needs an SDK this machine does not have. This writes each requested output
# (`-o X`, `/FoX`, `/OUT:X`, `ar cq X ...`) as an empty file and succeeds; nothing it "builds" is
# ever used. Never use it for a real build.
out=""
prev=""
case "${1:-}" in
  cq | cr | crs | rcs | cru | crus | s | q) out="${2:-}" ;;
esac
for arg in "$@"; do
  case "$arg" in
    -Fo* | /Fo*) out="${arg:3}" ;;
    -OUT:* | /OUT:* | -out:* | /out:*) out="${arg:5}" ;;
  esac
  [ "$prev" = "-o" ] && out="$arg"
  prev="$arg"
done
if [ -n "$out" ] && [ ! -e "$out" ]; then
  mkdir -p "$(dirname "$out")" && : >"$out"
fi
exit 0
