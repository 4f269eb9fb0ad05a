#!/usr/bin/env bash
# Tests an installed libsda prefix the way hosts use it, without LD_LIBRARY_PATH:
#
#   usage: tests/install/run.sh PREFIX [BUNDLED_PREFIX]
#          (PREFIX: what `make install PREFIX=...` wrote; BUNDLED_PREFIX: `make install BUNDLE_LIBTORCH=1`)
#
#  1. layout: versioned file, relative SONAME symlinks, backend beside the core, SONAME libsda.so.<major> (libsda.so.0.<minor> before 1.0)
#  2. the CMake consumer (tests/cmake_consumer: find_package + sda::sda / sda::static), run
#  3. sdaConfigVersion.cmake: before 1.0 accepts 0.<minor> only (rejects 0.<minor±1> and 1.0); after, the major
#  4. a host built with `pkg-config --cflags --libs sda`, run
#  5. every program in examples/ built against the prefix (C as C, C++ as C++) and run
#  6. `make install` with DESTDIR, then the staged prefix moved elsewhere: a program inside it, the
#     CMake consumer and a pkg-config build all still find libsda and its backend in the new place
#  7. the README's C++ quick start, extracted, compiled against the prefix and run
#  8. (with BUNDLED_PREFIX; as root) libtorch found at run time, both prefixes moved and the build
#     tree's torch/lib hidden in a private mount namespace: tests/install/libtorch_discovery.sh
#  9. the macOS and Windows layouts of the CMake package, installed here from test-double artifacts
#     (no Mac or Windows toolchain exists here): tests/install/platform_layouts.sh
#
# Every run prints the backend module it loaded; it must be the one inside the prefix under test.
set -euo pipefail

[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: $0 PREFIX [BUNDLED_PREFIX]" >&2; exit 2; }
prefix=$(cd "$1" && pwd -P)
bundled_prefix=${2:+$(cd "$2" && pwd -P)}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Nothing from the caller's environment may help the programs find libsda or its backend.
unset LD_LIBRARY_PATH SDA_BACKEND SDA_LIBTORCH SDA_CONFIG SDA_DEVICE SDA_LIBRARY PKG_CONFIG_PATH CMAKE_PREFIX_PATH

version=$(sed -n 's/^#define SDA_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/sda.h")
major=${version%%.*}
minor=$(cut -d. -f2 <<<"$version")
# The ABI version (SONAME suffix): the major from 1.0 on, major.minor before it.
if [ "$major" = 0 ]; then abi="0.$minor"; else abi=$major; fi
started=$SECONDS
step() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - started)); }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Runs a program and checks the backend it loaded: `expect_backend PREFIX_DIR PROGRAM [ARGS]`.
expect_backend() {
  local want_prefix=$1 output loaded
  shift
  output=$("$@") || die "$* failed: $output"
  printf '%s\n' "$output" | sed 's/^/    /'
  loaded=$(printf '%s\n' "$output" | sed -n 's/^backend: //p')
  [ -n "$loaded" ] || die "$1 printed no backend line"
  [ "$(realpath -m "$loaded")" = "$want_prefix/lib/libsda_torch.so" ] ||
    die "$1 loaded the backend $loaded, expected $want_prefix/lib/libsda_torch.so"
}

# The libsda a dynamically linked program resolves: `resolves_to PROGRAM PREFIX_DIR`.
resolves_to() {
  local resolved
  resolved=$(ldd "$1" | awk -v so="libsda.so.$abi" '$1 == so {print $3}')
  [ -n "$resolved" ] || die "$1 does not need libsda.so.$abi (ldd: $(ldd "$1" | tr '\n' ' '))"
  [ "$(realpath "$resolved")" = "$2/lib/libsda.so.$version" ] || die "$1 resolves libsda to $resolved, not $2/lib"
}

step "1. layout and SONAME of $prefix"
for f in "lib/libsda.so.$version" lib/libsda_torch.so lib/libsda.a bin/sda include/sda.h include/sda.hpp \
         lib/cmake/sda/sdaConfig.cmake lib/cmake/sda/sdaConfigVersion.cmake lib/pkgconfig/sda.pc; do
  [ -f "$prefix/$f" ] || die "missing $f"
done
[ "$(readlink "$prefix/lib/libsda.so.$abi")" = "libsda.so.$version" ] || die "libsda.so.$abi does not link to libsda.so.$version"
[ "$(readlink "$prefix/lib/libsda.so")" = "libsda.so.$abi" ] || die "libsda.so does not link to libsda.so.$abi"
soname=$(objdump -p "$prefix/lib/libsda.so.$version" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = "libsda.so.$abi" ] || die "SONAME is '$soname', expected libsda.so.$abi"
echo "    objdump -p: SONAME $soname"
# The core must not point into the build tree: it finds its backend beside itself, wherever it is.
if objdump -p "$prefix/lib/libsda.so.$version" | grep -qE '^ *(RPATH|RUNPATH)'; then
  die "libsda.so has an rpath: $(objdump -p "$prefix/lib/libsda.so.$version" | grep -E 'RPATH|RUNPATH')"
fi
# Nor does the backend: its run path is relative (a bundled libtorch); the core finds libtorch itself.
for module in "$prefix"/lib/libsda_torch*.so; do
  runpath=$(objdump -p "$module" | awk '$1 == "RUNPATH" || $1 == "RPATH" {print $2}')
  # shellcheck disable=SC2016 # $ORIGIN is for the dynamic loader
  [ "$runpath" = '$ORIGIN/sda/libtorch/lib' ] || die "$(basename "$module") has the run path '$runpath', expected \$ORIGIN/sda/libtorch/lib"
  echo "    $(basename "$module") run path: $runpath"
done

step "2. CMake consumer (find_package(sda 0.2) + sda::sda / sda::static)"
cmake -S "$repo/tests/cmake_consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" >"$work/consumer.log" 2>&1 ||
  { cat "$work/consumer.log"; die "the CMake consumer does not configure"; }
cmake --build "$work/consumer" >>"$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; die "the CMake consumer does not build"; }
resolves_to "$work/consumer/host" "$prefix"
expect_backend "$prefix" "$work/consumer/host"
if objdump -p "$work/consumer/host_static" | grep -q 'NEEDED.*libsda'; then die "host_static needs a shared libsda"; fi
# Statically linked, there is no libsda.so to find the backend beside: the host names it.
expect_backend "$prefix" env SDA_BACKEND="$prefix/lib/libsda_torch.so" "$work/consumer/host_static"
if out=$("$work/consumer/host_static" 2>&1); then die "host_static found a backend without being told where: $out"; fi
grep -q SDA_ERR_BACKEND_UNAVAILABLE <<<"$out" || die "host_static without SDA_BACKEND: $out"
echo "    host_static without SDA_BACKEND: SDA_ERR_BACKEND_UNAVAILABLE, as documented"

step "3. sdaConfigVersion.cmake (SameMinorVersion before 1.0, SameMajorVersion after)"
mkdir -p "$work/version"
cat >"$work/version/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(version_probe C)
find_package(sda ${REQUEST} REQUIRED)
message(STATUS "sda ${sda_VERSION} accepted for ${REQUEST}")
EOF
if [ "$major" = 0 ]; then accepted=("0.$minor" "$version"); rejected=("1.0" "0.$((minor + 1))" "0.$((minor - 1))");
else accepted=("$major.0" "$major" "$version"); rejected=("$((major + 1)).0" "$major.$((minor + 1))"); fi
for request in "${accepted[@]}"; do
  cmake -S "$work/version" -B "$work/version/b-$request" -DREQUEST="$request" -DCMAKE_PREFIX_PATH="$prefix" >"$work/v.log" 2>&1 ||
    { cat "$work/v.log"; die "find_package(sda $request) was rejected"; }
  echo "    find_package(sda $request): accepted"
done
for request in "${rejected[@]}"; do
  if cmake -S "$work/version" -B "$work/version/b-$request" -DREQUEST="$request" -DCMAKE_PREFIX_PATH="$prefix" >"$work/v.log" 2>&1; then
    die "find_package(sda $request) accepted version $version"
  fi
  grep -q "version: $version" "$work/v.log" || { cat "$work/v.log"; die "find_package(sda $request) failed for another reason"; }
  echo "    find_package(sda $request): rejected (considered $version, not accepted)"
done

step "4. pkg-config build"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion sda)" = "$version" ] || die "pkg-config --modversion sda: $(pkg-config --modversion sda)"
pkg-config --exists "sda >= $major.1" || die "pkg-config: sda >= $major.1 not satisfied"
libdir=$(pkg-config --variable=libdir sda)
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is intended
# The one documented flag that makes the program run without LD_LIBRARY_PATH: rpath_flag.
[ "$(pkg-config --variable=rpath_flag sda)" = "-Wl,-rpath,$libdir" ] || die "rpath_flag is '$(pkg-config --variable=rpath_flag sda)'"
cc -Wall -Wextra -Werror -o "$work/host_pc" "$repo/tests/cmake_consumer/host.c" $(pkg-config --cflags --libs sda) $(pkg-config --variable=rpath_flag sda)
resolves_to "$work/host_pc" "$prefix"
expect_backend "$prefix" "$work/host_pc"
unset PKG_CONFIG_PATH

step "5. every program in examples/, built against the installed package"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
shopt -s nullglob
built=0
for source in "$repo"/examples/*.c "$repo"/examples/*.cpp "$repo"/examples/*.cc; do
  name=$(basename "${source%.*}")
  case "$source" in
    *.c) compiler=(cc -std=c11) ;;
    *) compiler=(c++ -std=c++17) ;;
  esac
  # shellcheck disable=SC2046
  "${compiler[@]}" -Wall -Wextra -Werror -o "$work/$name" "$source" $(pkg-config --cflags --libs sda) -Wl,-rpath,"$libdir" ||
    die "examples/$(basename "$source") does not compile as ${compiler[0]} against $prefix"
  resolves_to "$work/$name" "$prefix"
  start=$SECONDS
  out=$(timeout 600 "$work/$name" 2>&1) || { printf '%s\n' "$out"; die "examples/$(basename "$source") failed"; }
  printf '%s\n' "$out" | sed 's/^/    /'
  echo "    examples/$(basename "$source") (${compiler[0]}): ok, $((SECONDS - start)) s"
  built=$((built + 1))
done
[ "$built" -gt 0 ] || die "no programs in examples/"
unset PKG_CONFIG_PATH

step "6. make install with DESTDIR, then the prefix moved elsewhere"
staged_prefix=/opt/libsda-install-test
make --no-print-directory -C "$repo" install PREFIX="$staged_prefix" DESTDIR="$work/stage" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; die "make install DESTDIR=... failed"; }
[ ! -e "$staged_prefix" ] || die "make install with DESTDIR wrote to $staged_prefix"
[ -f "$work/stage$staged_prefix/lib/libsda.so.$version" ] || die "nothing installed under DESTDIR"
# A program shipped inside the prefix, found relative to itself ($ORIGIN) — as an application
# bundle would do.
mkdir -p "$work/stage$staged_prefix/bin"
# shellcheck disable=SC2016,SC2046 # $ORIGIN is for the dynamic loader
cc -o "$work/stage$staged_prefix/bin/host" "$repo/tests/cmake_consumer/host.c" \
  $(PKG_CONFIG_PATH="$work/stage$staged_prefix/lib/pkgconfig" pkg-config --cflags --libs sda) -Wl,-rpath,'$ORIGIN/../lib'
mkdir -p "$work/moved"
mv "$work/stage$staged_prefix" "$work/moved/elsewhere"
moved=$(cd "$work/moved/elsewhere" && pwd -P)
echo "    moved to $moved"
resolves_to "$moved/bin/host" "$moved"
expect_backend "$moved" "$moved/bin/host"
cmake -S "$repo/tests/cmake_consumer" -B "$work/consumer-moved" -DCMAKE_PREFIX_PATH="$moved" >"$work/consumer.log" 2>&1 &&
  cmake --build "$work/consumer-moved" >>"$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; die "the CMake consumer fails against the moved prefix"; }
expect_backend "$moved" "$work/consumer-moved/host"
export PKG_CONFIG_PATH="$moved/lib/pkgconfig"
# shellcheck disable=SC2046
cc -o "$work/host_pc_moved" "$repo/tests/cmake_consumer/host.c" $(pkg-config --cflags --libs sda) -Wl,-rpath,"$(pkg-config --variable=libdir sda)"
expect_backend "$moved" "$work/host_pc_moved"
unset PKG_CONFIG_PATH
# The installed CLI finds the backend in its prefix's lib/, moved or not, and loads it.
doctor=$("$moved/bin/sda" doctor --verbose --json) || die "bin/sda doctor failed in the moved prefix: $doctor"
module=$(printf '%s\n' "$doctor" | sed -n 's/^ *"module_path": "\(.*\)",\{0,1\}$/\1/p' | head -1)
[ "$(realpath -m "$module")" = "$moved/lib/libsda_torch.so" ] ||
  die "bin/sda loaded the backend '$module', expected $moved/lib/libsda_torch.so"
echo "    bin/sda doctor: backend $module"

step "7. the README's C++ quick start"
# The first cpp code block after the "### C++" heading, exactly as a reader would copy it.
awk '/^### C\+\+$/ {section = 1} section && /^```cpp$/ {code = 1; next} code && /^```$/ {exit} code {print}' \
  "$repo/README.md" >"$work/readme_quickstart.cpp"
[ -s "$work/readme_quickstart.cpp" ] || die "no C++ quick start in README.md"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046
c++ -std=c++17 -Wall -Wextra -Werror -o "$work/readme_quickstart" "$work/readme_quickstart.cpp" \
  $(pkg-config --cflags --libs sda) -Wl,-rpath,"$(pkg-config --variable=libdir sda)" || die "the README's C++ quick start does not compile"
unset PKG_CONFIG_PATH
out=$("$work/readme_quickstart" 2>&1) || { printf '%s\n' "$out"; die "the README's C++ quick start failed"; }
printf '%s\n' "$out" | sed 's/^/    /'
grep -q '^device: ' <<<"$out" || die "the README's C++ quick start printed no device"

if [ -n "$bundled_prefix" ]; then
  step "8. libtorch found at run time (the build tree's torch hidden, both prefixes moved)"
  { [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; } || die "step 8 needs root and unshare (a private mount namespace)"
  [ -f "$bundled_prefix/lib/sda/libtorch/lib/libtorch_cpu.so" ] || die "$bundled_prefix has no bundled libtorch"
  echo "    bundle: $(du -sh "$bundled_prefix/lib/sda/libtorch" | cut -f1): $(ls "$bundled_prefix/lib/sda/libtorch/lib" | tr '\n' ' ')"
  torch=$(bash "$repo/scripts/provision.sh")
  torch_2_11=
  if [ -f "$prefix/lib/libsda_torch-2.11.so" ]; then torch_2_11=$(bash "$repo/scripts/provision.sh" --torch 2.11.0); fi
  # Moved: the plain prefix copied (the Python and Swift tests use it afterwards), the bundled one
  # moved and moved back (these checks are its only user).
  cp -a "$prefix" "$work/plain"
  mv "$bundled_prefix" "$work/bundled"
  trap '[ ! -d "$work/bundled" ] || mv "$work/bundled" "$bundled_prefix"; rm -rf "$work"' EXIT
  WORK=$work REPO=$repo TORCH=$torch TORCH_2_11=$torch_2_11 VERSION=$(sed -n "s/^__version__ = '\([0-9.]*\).*/\1/p" "$torch/version.py") \
    unshare -m bash "$repo/tests/install/libtorch_discovery.sh" || die "libtorch found at run time (step 8)"
  mv "$work/bundled" "$bundled_prefix"
fi

step "9. the macOS and Windows layouts (test doubles, SDA_PLATFORM=Darwin / Windows)"
bash "$repo/tests/install/platform_layouts.sh" || die "the macOS / Windows layouts (step 9)"

printf '\ninstall tests passed (%d s)\n' $((SECONDS - started))
