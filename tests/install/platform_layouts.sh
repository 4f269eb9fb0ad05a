#!/usr/bin/env bash
# The macOS and Windows layouts of the CMake package (cmake/CMakeLists.txt, SDA_PLATFORM), installed
# here on Linux from TEST-DOUBLE artifacts.
#
#   usage: tests/install/platform_layouts.sh      (run by tests/install/run.sh; needs cmake, pkg-config)
#
# This machine has no Mac and no Windows toolchain (no ld64, no MSVC link.exe), so the libraries cargo
# would build there cannot exist here. Every "artifact" below is a TEST DOUBLE: a small text file with
# the name cargo gives that artifact on that platform (macOS: libsda.dylib, libsda.a, sda,
# libsda_torch.dylib; Windows MSVC: sda.dll, sda.dll.lib, sda.lib, sda.exe, sda_torch.dll) and a line
# saying which one it stands for, so that a file installed under the wrong name is caught. For macOS,
# otool / install_name_tool / codesign are TEST DOUBLES too (scripts that print fixed load commands and
# log their calls), which checks the calls the install makes, not what Apple's tools do with them.
#
# For each platform: configure and install into a fresh prefix, then check
#  1. the installed file list, exactly (names, symlinks and their targets), and which double each holds;
#  2. the generated sda.pc (backend, static_library, rpath_flag, Libs, Libs.private), through pkg-config;
#  3. a consumer project (find_package(sda 0.2), then get_target_property on sda::sda / sda::static:
#     IMPORTED_LOCATION, IMPORTED_IMPLIB, IMPORTED_SONAME, INTERFACE_LINK_LIBRARIES/OPTIONS, and
#     sda_BACKEND_MODULE), which fails with message(FATAL_ERROR) on a mismatch: configured only, since
#     nothing can be linked against a test double;
#  4. (macOS) the tool calls: each module's absolute run path deleted, @loader_path/sda/libtorch/lib
#     added, the module signed again.
# And that the checks can fail: a consumer told to expect a wrong import library, a missing artifact, an
# unknown SDA_PLATFORM and BUNDLE_LIBTORCH off Linux must all be refused.
#
# The system libraries of the static core are given per platform (what rustc's --print
# native-static-libs reports there; an example, since rustc cannot be asked for these targets' lists
# without their linkers): SDA_NATIVE_STATIC_LIBS_DARWIN, SDA_NATIVE_STATIC_LIBS_WINDOWS override them.
# Exits non-zero on any mismatch.
set -euo pipefail

[ $# -eq 0 ] || { echo "usage: $0" >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
work=$(cd "$work" && pwd -P)
trap 'rm -rf "$work"' EXIT
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH DESTDIR

darwin_libs=${SDA_NATIVE_STATIC_LIBS_DARWIN:--framework CoreFoundation -liconv -lSystem -lc -lm}
windows_libs=${SDA_NATIVE_STATIC_LIBS_WINDOWS:-kernel32.lib advapi32.lib ntdll.lib userenv.lib ws2_32.lib bcrypt.lib dbghelp.lib /defaultlib:msvcrt}

version=$(sed -n 's/^#define SDA_VERSION_STRING "\(.*\)"/\1/p' "$repo/include/sda.h")
major=${version%%.*}
minor=$(cut -d. -f2 <<<"$version")
if [ "$major" = 0 ]; then abi="0.$minor"; else abi=$major; fi
die() { printf 'FAIL (platform layouts): %s\n' "$*" >&2; exit 1; }
say() { printf '    %s\n' "$*"; }

# `doubles DIR PLATFORM NAME...`: one test-double file per NAME, saying which artifact it stands for.
doubles() {
  local dir=$1 platform=$2 name
  shift 2
  mkdir -p "$dir"
  for name in "$@"; do
    printf 'TEST DOUBLE of cargo'"'"'s %s for %s (no toolchain for it on this machine)\n' "$name" "$platform" >"$dir/$name"
  done
}

# `install_layout PLATFORM NATIVE_LIBS [CMAKE_ARGS...]`: configures and installs $work/PLATFORM/prefix
# from $work/PLATFORM/artifacts (+ the 2.11 module in $work/PLATFORM/torch-2.11/).
install_layout() {
  local platform=$1 libs=$2 extra
  shift 2
  extra=$(ls "$work/$platform/torch-2.11/"*)
  cmake -S "$repo/cmake" -B "$work/$platform/build" -DSDA_PLATFORM="$platform" \
    -DSDA_ARTIFACT_DIR="$work/$platform/artifacts" -DSDA_INCLUDE_DIR="$repo/include" \
    -DSDA_NATIVE_STATIC_LIBS="$libs" -DSDA_EXTRA_BACKENDS="2.11=$extra" \
    -DSDA_BUNDLE_LIBTORCH=0 -DSDA_LIBTORCH_LIB_DIR=/nonexistent "$@" >"$work/$platform/configure.log" 2>&1 ||
    { cat "$work/$platform/configure.log"; die "$platform: the CMake package does not configure"; }
  cmake --install "$work/$platform/build" --prefix "$work/$platform/prefix" >"$work/$platform/install.log" 2>&1 ||
    { cat "$work/$platform/install.log"; die "$platform: cmake --install failed"; }
}

# `check_files PREFIX EXPECTED`: every file and symlink under PREFIX, exactly (`path` or `path -> target`).
check_files() {
  local prefix=$1 expected=$2 actual
  actual=$(cd "$prefix" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\./||' | LC_ALL=C sort |
    while read -r f; do if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f"; fi; done)
  expected=$(LC_ALL=C sort <<<"$expected")
  diff <(echo "$expected") <(echo "$actual") >"$work/files.diff" ||
    { sed 's/^/    /' "$work/files.diff"; die "$prefix: installed files differ from the expected layout (< expected, > installed)"; }
  say "installed files: $(wc -l <<<"$actual"), as expected"
}

# `holds PREFIX FILE PLATFORM NAME`: the installed FILE is the double of cargo's NAME.
holds() {
  grep -qF "cargo's $4 for $3 " "$1/$2" || die "$2 holds '$(head -1 "$1/$2")', expected the double of $4"
}

# `pc_is PREFIX VARIABLE EXPECTED_PATH`: a path variable of sda.pc, resolved.
pc_path_is() {
  local got
  got=$(PKG_CONFIG_PATH="$1/lib/pkgconfig" pkg-config --variable="$2" sda)
  [ "$(realpath -m "$got")" = "$3" ] || die "sda.pc: $2 is '$got', expected $3"
}

# `check_pc PREFIX BACKEND STATIC RPATH_FLAG LIBS_PRIVATE`.
check_pc() {
  local prefix=$1 libs flag
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  [ "$(pkg-config --modversion sda)" = "$version" ] || die "sda.pc: version $(pkg-config --modversion sda)"
  pc_path_is "$prefix" backend "$prefix/$2"
  pc_path_is "$prefix" static_library "$prefix/$3"
  pc_path_is "$prefix" libdir "$prefix/lib"
  libs=$(pkg-config --libs sda)
  [[ "$libs" =~ ^-L([^ ]+)\ -lsda\ *$ ]] || die "sda.pc: Libs is '$libs', expected -L<prefix>/lib -lsda"
  [ "$(realpath -m "${BASH_REMATCH[1]}")" = "$prefix/lib" ] || die "sda.pc: Libs points to ${BASH_REMATCH[1]}"
  flag=$(pkg-config --variable=rpath_flag sda)
  if [ -z "$4" ]; then
    [ -z "$flag" ] || die "sda.pc: rpath_flag is '$flag', expected none"
  else
    [ "$flag" = "$4$prefix/lib/pkgconfig/../../lib" ] || [ "$(realpath -m "${flag#"$4"}")" = "$prefix/lib" ] ||
      die "sda.pc: rpath_flag is '$flag', expected $4<prefix>/lib"
  fi
  [ "$(sed -n 's/^Libs.private: //p' "$prefix/lib/pkgconfig/sda.pc")" = "$5" ] ||
    die "sda.pc: Libs.private is '$(sed -n 's/^Libs.private: //p' "$prefix/lib/pkgconfig/sda.pc")', expected '$5'"
  pkg-config --static --libs sda >/dev/null || die "sda.pc: pkg-config --static --libs fails"
  unset PKG_CONFIG_PATH
  say "sda.pc: backend $2, static_library $3, rpath_flag '${4:+$4<prefix>/lib}', Libs.private '$5'"
}

# The consumer: find_package, then each property compared with what it is told to expect.
mkdir -p "$work/consumer"
cat >"$work/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(layout_consumer C)
find_package(sda 0.2 REQUIRED)
# An empty expectation means: the property is not set.
function(expect target property want)
  get_target_property(got ${target} ${property})
  if(want STREQUAL "")
    if(got)
      message(FATAL_ERROR "${target} ${property} is '${got}', expected it unset")
    endif()
  elseif(NOT got STREQUAL want)
    message(FATAL_ERROR "${target} ${property} is '${got}', expected '${want}'")
  endif()
endfunction()
expect(sda::sda TYPE SHARED_LIBRARY)
expect(sda::sda IMPORTED_LOCATION "${WANT_LOCATION}")
expect(sda::sda IMPORTED_IMPLIB "${WANT_IMPLIB}")
expect(sda::sda IMPORTED_SONAME "${WANT_SONAME}")
expect(sda::sda INTERFACE_INCLUDE_DIRECTORIES "${WANT_PREFIX}/include")
expect(sda::static TYPE STATIC_LIBRARY)
expect(sda::static IMPORTED_LOCATION "${WANT_STATIC}")
expect(sda::static INTERFACE_LINK_LIBRARIES "${WANT_STATIC_LIBS}")
expect(sda::static INTERFACE_LINK_OPTIONS "${WANT_STATIC_OPTIONS}")
if(NOT sda_BACKEND_MODULE STREQUAL WANT_BACKEND)
  message(FATAL_ERROR "sda_BACKEND_MODULE is '${sda_BACKEND_MODULE}', expected '${WANT_BACKEND}'")
endif()
foreach(file IN ITEMS "${WANT_LOCATION}" "${WANT_IMPLIB}" "${WANT_STATIC}" "${WANT_BACKEND}")
  if(file AND NOT EXISTS "${file}")
    message(FATAL_ERROR "${file} does not exist")
  endif()
endforeach()
message(STATUS "layout consumer: every property as expected")
EOF

# `consumer NAME PREFIX CMAKE_ARGS...`: configures the consumer against PREFIX; returns its status.
consumer() {
  local name=$1 prefix=$2
  shift 2
  cmake -S "$work/consumer" -B "$work/consumer/$name" -DCMAKE_PREFIX_PATH="$prefix" -DWANT_PREFIX="$prefix" "$@" \
    >"$work/consumer/$name.log" 2>&1
}

echo "== macOS (Darwin) layout, from test doubles"
d=$work/Darwin
doubles "$d/artifacts" macOS libsda.dylib libsda.a sda libsda_torch.dylib
doubles "$d/torch-2.11" "macOS (libtorch 2.11)" libsda_torch.dylib
# TEST DOUBLES of Xcode's tools: otool prints two run paths (the build tree's libtorch, @loader_path),
# the others log their arguments.
mkdir -p "$d/tools"
cat >"$d/tools/otool" <<EOF
#!/usr/bin/env bash
# TEST DOUBLE of otool -l: the load commands a module built by crates/sda_torch/build.rs would show.
echo "otool \$*" >>"$d/tools.log"
printf '%s:\nLoad command 11\n          cmd LC_RPATH\n      cmdsize 48\n         path /build/torch/lib (offset 12)\n' "\$2"
printf 'Load command 12\n          cmd LC_RPATH\n      cmdsize 32\n         path @loader_path (offset 12)\n'
EOF
for tool in install_name_tool codesign; do
  printf '#!/usr/bin/env bash\n# TEST DOUBLE of %s: logs its arguments.\necho "%s $*" >>"%s"\n' "$tool" "$tool" "$d/tools.log" >"$d/tools/$tool"
done
chmod +x "$d/tools/"*
install_layout Darwin "$darwin_libs" -DSDA_OTOOL="$d/tools/otool" \
  -DSDA_INSTALL_NAME_TOOL="$d/tools/install_name_tool" -DSDA_CODESIGN="$d/tools/codesign"
p=$d/prefix
check_files "$p" "bin/sda
include/sda.h
include/sda.hpp
lib/cmake/sda/sdaConfig.cmake
lib/cmake/sda/sdaConfigVersion.cmake
lib/libsda.$version.dylib
lib/libsda.$abi.dylib -> libsda.$version.dylib
lib/libsda.dylib -> libsda.$abi.dylib
lib/libsda.a
lib/libsda_torch.dylib
lib/libsda_torch-2.11.dylib
lib/pkgconfig/sda.pc"
holds "$p" "lib/libsda.$version.dylib" macOS libsda.dylib
holds "$p" lib/libsda.a macOS libsda.a
holds "$p" bin/sda macOS sda
holds "$p" lib/libsda_torch.dylib macOS libsda_torch.dylib
holds "$p" lib/libsda_torch-2.11.dylib "macOS (libtorch 2.11)" libsda_torch.dylib
[ -x "$p/lib/libsda.$version.dylib" ] && [ -x "$p/bin/sda" ] && [ -x "$p/lib/libsda_torch.dylib" ] ||
  die "macOS: the libraries and the CLI are not installed executable"
check_pc "$p" lib/libsda_torch.dylib lib/libsda.a "-Wl,-rpath," "-framework CoreFoundation -liconv -lSystem -lc -lm"
consumer darwin "$p" -DWANT_LOCATION="$p/lib/libsda.$version.dylib" -DWANT_IMPLIB= \
  -DWANT_SONAME="@rpath/libsda.$abi.dylib" -DWANT_STATIC="$p/lib/libsda.a" \
  -DWANT_STATIC_LIBS="-framework CoreFoundation;iconv;System;c;m" -DWANT_STATIC_OPTIONS= \
  -DWANT_BACKEND="$p/lib/libsda_torch.dylib" || { cat "$work/consumer/darwin.log"; die "macOS: the consumer's checks failed"; }
say "consumer: IMPORTED_LOCATION lib/libsda.$version.dylib, IMPORTED_SONAME @rpath/libsda.$abi.dylib, no IMPORTED_IMPLIB"
expected_calls=
for m in lib/libsda_torch.dylib lib/libsda_torch-2.11.dylib; do
  expected_calls+="otool -l $p/$m
install_name_tool -delete_rpath /build/torch/lib $p/$m
install_name_tool -add_rpath @loader_path/sda/libtorch/lib $p/$m
codesign --force --sign - $p/$m
"
done
diff <(printf '%s' "$expected_calls") "$d/tools.log" >"$work/tools.diff" ||
  { sed 's/^/    /' "$work/tools.diff"; die "macOS: the run-path edits differ (< expected, > made)"; }
say "run paths: the build tree's deleted, @loader_path/sda/libtorch/lib added, signed again (test-double tools)"

echo "== Windows (MSVC) layout, from test doubles"
w=$work/Windows
doubles "$w/artifacts" Windows sda.dll sda.dll.lib sda.lib sda.exe sda_torch.dll
doubles "$w/torch-2.11" "Windows (libtorch 2.11)" sda_torch.dll
install_layout Windows "$windows_libs"
p=$w/prefix
check_files "$p" "bin/sda.dll
bin/sda.exe
bin/sda_torch.dll
bin/sda_torch-2.11.dll
include/sda.h
include/sda.hpp
lib/cmake/sda/sdaConfig.cmake
lib/cmake/sda/sdaConfigVersion.cmake
lib/sda.lib
lib/sda_static.lib
lib/pkgconfig/sda.pc"
holds "$p" bin/sda.dll Windows sda.dll
holds "$p" lib/sda.lib Windows sda.dll.lib
holds "$p" lib/sda_static.lib Windows sda.lib
holds "$p" bin/sda.exe Windows sda.exe
holds "$p" bin/sda_torch.dll Windows sda_torch.dll
holds "$p" bin/sda_torch-2.11.dll "Windows (libtorch 2.11)" sda_torch.dll
check_pc "$p" bin/sda_torch.dll lib/sda_static.lib "" \
  "-lkernel32 -ladvapi32 -lntdll -luserenv -lws2_32 -lbcrypt -ldbghelp /defaultlib:msvcrt"
win_args=(-DWANT_LOCATION="$p/bin/sda.dll" -DWANT_SONAME= -DWANT_STATIC="$p/lib/sda_static.lib"
  -DWANT_STATIC_LIBS="kernel32;advapi32;ntdll;userenv;ws2_32;bcrypt;dbghelp" -DWANT_STATIC_OPTIONS="/defaultlib:msvcrt"
  -DWANT_BACKEND="$p/bin/sda_torch.dll")
consumer windows "$p" "${win_args[@]}" -DWANT_IMPLIB="$p/lib/sda.lib" ||
  { cat "$work/consumer/windows.log"; die "Windows: the consumer's checks failed"; }
say "consumer: IMPORTED_LOCATION bin/sda.dll, IMPORTED_IMPLIB lib/sda.lib, no IMPORTED_SONAME"

echo "== the checks refuse what is wrong"
# The consumer's checks can fail: the static library expected as the import library.
if consumer windows-wrong "$p" "${win_args[@]}" -DWANT_IMPLIB="$p/lib/sda_static.lib"; then
  die "the consumer accepted a wrong IMPORTED_IMPLIB"
fi
# (CMake wraps the message's lines.)
tr -s ' \n' ' ' <"$work/consumer/windows-wrong.log" |
  grep -qF "IMPORTED_IMPLIB is '$p/lib/sda.lib', expected '$p/lib/sda_static.lib'" ||
  { cat "$work/consumer/windows-wrong.log"; die "the consumer failed for another reason than the wrong IMPORTED_IMPLIB"; }
say "consumer expecting lib/sda_static.lib as IMPORTED_IMPLIB: refused"
# `refused NAME MESSAGE CMAKE_ARGS...`: configuring the package must fail, saying MESSAGE.
refused() {
  local name=$1 message=$2
  shift 2
  if cmake -S "$repo/cmake" -B "$work/refused-$name" -DSDA_INCLUDE_DIR="$repo/include" \
    -DSDA_NATIVE_STATIC_LIBS="$windows_libs" "$@" >"$work/refused.log" 2>&1; then
    die "$name: the CMake package configured"
  fi
  tr -s ' \n' ' ' <"$work/refused.log" | grep -qF "$message" || { cat "$work/refused.log"; die "$name: failed without saying '$message'"; }
  say "$name: refused ($message)"
}
mkdir -p "$work/no-implib"
cp "$w/artifacts/"* "$work/no-implib/"
rm "$work/no-implib/sda.dll.lib"
refused "Windows without sda.dll.lib" "sda.dll.lib is missing" -DSDA_PLATFORM=Windows -DSDA_ARTIFACT_DIR="$work/no-implib"
refused "SDA_PLATFORM=FreeBSD" "SDA_PLATFORM must be Linux, Darwin or Windows" -DSDA_PLATFORM=FreeBSD -DSDA_ARTIFACT_DIR="$w/artifacts"
refused "BUNDLE_LIBTORCH on Windows" "BUNDLE_LIBTORCH is supported on Linux only" -DSDA_PLATFORM=Windows \
  -DSDA_ARTIFACT_DIR="$w/artifacts" -DSDA_BUNDLE_LIBTORCH=1
echo "platform layouts (macOS, Windows; test doubles) passed"
