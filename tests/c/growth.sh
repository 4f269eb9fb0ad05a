#!/usr/bin/env bash
# The two-build proof that structs grow without breaking programs (issue 11):
#   1. builds libsda a second time with one more trailing uint32_t field in every struct
#      (cargo feature sda/abi-growth-test, its own target directory), as the next version might;
#   2. builds test_growth.c, test_abi.c and test_plan.c against today's header — unchanged programs
#      whose structs are, to that library, an older version's — and runs them against it.
# The reverse (a newer program against today's library) is test_growth.c's GROWN structs, run by
# CTest against today's library. Usage: tests/c/growth.sh [work dir] (default build/growth).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$repo/build/growth}
target=$work/target
mkdir -p "$work/lib"
cargo build --manifest-path "$repo/Cargo.toml" -p sda --features sda/abi-growth-test --target-dir "$target"
lib=$target/debug/libsda.so
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
cp -L "$lib" "$work/lib/$soname"
ln -sf "$soname" "$work/lib/libsda.so"
# The backend module is unchanged by the feature: the workspace's own, beside the grown core.
for backend in "$repo/target/debug/libsda_torch.so" "$repo/target/release/libsda_torch.so"; do
  if [ -e "$backend" ]; then ln -sf "$backend" "$work/lib/libsda_torch.so"; break; fi
done
cc=${CC:-cc}
flags=(-std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I"$repo/include" -I"$repo/tests/c")
fail=0
for program in test_growth test_abi test_plan; do
  "$cc" "${flags[@]}" "$repo/tests/c/$program.c" -L"$work/lib" -lsda -lm -Wl,-rpath,"$work/lib" -o "$work/$program"
  needed=$(ldd "$work/$program")
  grep -q "$work/lib/$soname" <<<"$needed" || { echo "$program does not load the grown library"; exit 1; }
  echo "== $program (built against today's header) against the grown library"
  if (cd "$work" && SDA_TEST_GROWN_LIBRARY=1 "./$program"); then :; else fail=1; fi
done
exit $fail
