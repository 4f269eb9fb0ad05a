#!/usr/bin/env bash
# Prints the system libraries a program must link besides libsda.a (e.g. "gcc_s util rt pthread m dl
# c"), as rustc reports them for the core crate built as a static library.
#
# rustc prints this list only while it compiles with `--print native-static-libs`, and passing that
# flag changes the crate's fingerprint. Doing it in the shared target/ would make the next `cargo
# build` rebuild libsda (and toggle back and forth), so the crate is compiled once more in a target
# folder of its own (debug: quicker to compile, and the list does not depend on the profile). The
# answer is cached there and recomputed only when Cargo.toml or Cargo.lock change, since only new
# dependencies can add native libraries.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
probe_dir="$root/target/native-static-libs"
cache="$probe_dir/libs.txt"
key=$(cat "$root/Cargo.toml" "$root/Cargo.lock" | sha256sum | cut -d' ' -f1)

if [ -f "$cache" ] && [ "$(head -1 "$cache")" = "$key" ]; then
  sed -n 2p "$cache"
  exit 0
fi

mkdir -p "$probe_dir"
out=$(cd "$root" && CARGO_TARGET_DIR="$probe_dir" cargo rustc --quiet --lib -p sda --crate-type staticlib \
  -- --print native-static-libs 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
# rustc's note, per target: Linux "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc", macOS
# "-framework CoreFoundation -liconv -lSystem -lc -lm", MSVC "kernel32.lib ntdll.lib /defaultlib:msvcrt".
# Linux names lose their -l (the form the Linux install has always recorded); everything else is kept
# as rustc wrote it, a "-framework NAME" pair as one item, duplicates after the first dropped.
# cmake/CMakeLists.txt sorts the forms into link libraries and options.
libs=$(printf '%s\n' "$out" | sed -n 's/.*native-static-libs: //p' | tail -1 | tr ' ' '\n' |
  awk 'NF == 0 { next }
       pending { item = "-framework " $0; pending = 0 }
       $0 == "-framework" { pending = 1; next }
       !item { item = $0; sub(/^-l/, "", item) }
       !seen[item]++ { print item }
       { item = "" }' | tr '\n' ' ' | sed 's/ $//')
[ -n "$libs" ] || { printf 'no native-static-libs line in rustc output:\n%s\n' "$out" >&2; exit 1; }
printf '%s\n%s\n' "$key" "$libs" >"$cache"
printf '%s\n' "$libs"
