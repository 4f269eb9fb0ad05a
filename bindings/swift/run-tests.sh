#!/usr/bin/env bash
# Builds the Swift package and runs its XCTest tests for real against an installed libsda prefix.
#
#   usage: bindings/swift/run-tests.sh PREFIX        (PREFIX: what `make install PREFIX=...` wrote)
#
# Debian 12 packages no Swift and no toolchain can be downloaded here, but Debian 13 ("trixie") has
# `swiftlang`, and it runs in a debootstrapped root (see ../shared/notes/swift.md). So:
# - The root is created once, in the git-ignored .swiftroot at the top of the repository (or
#   $SDA_SWIFT_ROOT), about a minute and 3 GB the first time; later runs reuse it. It is built in a
#   `.partial` folder and renamed when complete, so an interrupted creation is never mistaken for a
#   usable root.
# - Everything else happens in a private mount namespace (unshare): the mounts (proc, dev, the prefix,
#   the libtorch the backend was built against) vanish with the process even when it is killed, so no
#   stale bind mount is ever left inside the root for a later `rm -rf` to walk into. A trap unmounts
#   them in order anyway on a normal exit.
# - The prefix and libtorch's directory are bind-mounted at their own absolute paths: the backend
#   module's rpath names that libtorch, and the point is to run what was installed, unmodified.
# - The package is copied into the root (not mounted), so SwiftPM never writes into the source tree;
#   its build folder stays inside the root, so rebuilds are incremental.
# Needs root (debootstrap, chroot, mount).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${SDA_SWIFT_ROOT:-$repo/.swiftroot}
suite=trixie
log() { printf 'swift-tests: %s\n' "$*" >&2; }

[ $# -eq 1 ] || { echo "usage: $0 PREFIX" >&2; exit 2; }
prefix=$(cd "$1" && pwd -P)
[ -f "$prefix/lib/pkgconfig/sda.pc" ] || { log "$prefix is not an installed libsda prefix"; exit 1; }
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot, mount)"; exit 1; }

# Paths under the root that are mount points right now (in this namespace), deepest first.
mounts_under() {
  awk -v r="$1" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r
}

# The Debian mirror this machine already uses (deb822 or one-line sources), so the root comes from
# the same place as the machine's own packages.
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1 || true)
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

create_root() {
  [ -f "$root/.sda-swift-ready" ] && return 0
  if [ -e "$root" ]; then
    log "$root exists but is not a complete Swift root; remove it (rm -rf $root) and run again"
    exit 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 ||
      { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2; }
  fi
  local partial="$root.partial" start=$SECONDS
  # A partial root from an interrupted run is never mounted (mounts live in a namespace that died
  # with it), but check anyway before deleting anything.
  if [ -n "$(mounts_under "$partial")" ]; then
    log "mounts remain under $partial; unmount them first"; exit 1
  fi
  rm -rf "$partial"
  log "creating a Debian $suite root with swiftlang in $root (about a minute, 3 GB; once)"
  # libc6-dev and gcc: swiftc links through the system C toolchain (crt files, libc).
  # swiftlang unpacks to 2.1 GB, the largest single step: say up front how much room there is.
  log "free space where the root goes: $(df -h --output=avail "$(dirname "$root")" | tail -1 | tr -d ' ')"
  if ! debootstrap --variant=minbase --include=swiftlang,libc6-dev,gcc "$suite" "$partial" "$(debian_mirror)" \
    >"$root.debootstrap.log" 2>&1; then
    # debootstrap's own output only says which package failed; dpkg's reason is in the root's log.
    tail -5 "$root.debootstrap.log" >&2
    if [ -f "$partial/debootstrap/debootstrap.log" ]; then
      log "dpkg's errors from $partial/debootstrap/debootstrap.log:"
      grep -E 'dpkg|[Ee]rror|No space|cannot|failed' "$partial/debootstrap/debootstrap.log" | tail -15 >&2 || true
    fi
    df -h "$(dirname "$root")" >&2
    rm -rf "$partial"
    exit 1
  fi
  # The downloaded packages (about 600 MB) are not needed once they are installed.
  rm -f "$partial"/var/cache/apt/archives/*.deb
  touch "$partial/.sda-swift-ready"
  mv "$partial" "$root"
  rm -f "$root.debootstrap.log"
  log "root created in $((SECONDS - start)) s"
}

# Mount points made so far, unmounted in reverse order on exit (global: the EXIT trap runs after
# the function that filled it has returned).
mounted=()

# Runs inside the private mount namespace.
run_in_namespace() {
  cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}"; done
  }
  trap cleanup EXIT
  # Bind-mounts $1 at $root$1 (same absolute path inside), read-only when $2 is "ro".
  bind_same_path() {
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    mounted+=("$root$1")
    [ "${2:-}" != ro ] || mount -o remount,bind,ro "$root$1"
  }
  mount -t proc proc "$root/proc"; mounted+=("$root/proc")
  mount --bind /dev "$root/dev"; mounted+=("$root/dev")
  bind_same_path "$prefix" ro

  # The libtorch the backend was built against (the module records it; libsda finds it there when
  # nothing else names one). A PyPI wheel's libtorch finds its CUDA libraries in sibling packages
  # (../../nvidia/*), so the folder that holds the torch package is mounted, not only torch/lib.
  local torch_lib torch_home
  torch_lib=$(bash "$repo/scripts/provision.sh")/lib
  if [ -n "$torch_lib" ] && [ -d "$torch_lib" ]; then
    torch_home=$(cd "$torch_lib/../.." && pwd -P)
    bind_same_path "$torch_home" ro
  else
    log "the backend's libtorch ($torch_lib) is not on this machine; torch tests will report it"
  fi

  rm -rf "$root/work/sda-swift"
  mkdir -p "$root/work"
  cp -a "$here" "$root/work/sda-swift"
  rm -f "$root/work/sda-swift/run-tests.sh"

  # A clean environment: nothing of the host's (LD_LIBRARY_PATH, SDA_*) leaks in. The rpath makes the
  # test binary find libsda in the prefix, as a host's own build would.
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 PKG_CONFIG_PATH="$prefix/lib/pkgconfig" SDA_TEST_PREFIX="$prefix" \
    /bin/bash -euo pipefail -c '
      cd /work/sda-swift
      swift --version 2>&1 | head -1
      swift build --build-tests --scratch-path /work/sda-swift-build -Xlinker -rpath -Xlinker "$SDA_TEST_PREFIX/lib"
      swift test --skip-build --scratch-path /work/sda-swift-build
    '
}

if [ "${SDA_SWIFT_IN_NAMESPACE:-}" = 1 ]; then
  run_in_namespace
  exit 0
fi

# The README's Swift quick start is compiled and run as the test testReadmeQuickStart: every line of
# the README's block must be in that test, so the two cannot drift apart.
readme_block=$(awk '/^### Swift$/ {section = 1} section && /^```swift$/ {code = 1; next} code && /^```$/ {exit} code {print}' "$repo/README.md")
[ -n "$readme_block" ] || { log "no Swift quick start in README.md"; exit 1; }
while IFS= read -r line; do
  line=$(sed 's/^ *//; s/ *$//' <<<"$line")
  [ -z "$line" ] && continue
  grep -qF -- "$line" "$here/Tests/SdaTests/SdaTests.swift" ||
    { log "README's Swift quick start line not in testReadmeQuickStart: $line"; exit 1; }
done <<<"$readme_block"

create_root
start=$SECONDS
SDA_SWIFT_IN_NAMESPACE=1 unshare --mount --propagation private "$BASH" "${BASH_SOURCE[0]}" "$prefix"
log "swift build + test: $((SECONDS - start)) s"
