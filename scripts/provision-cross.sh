#!/usr/bin/env bash
# Provisions the toolchain `make cross-check` needs, idempotently: Debian's rustc-web (a Rust new
# enough for the workspace) with its standard-library sources (rust-web-src, which -Zbuild-std
# compiles for targets that have no prebuilt std here: macOS and Windows need no SDK to be
# type-checked) and its clippy (rust-web-clippy). Installed only when missing and only as root.
# They install as /usr/bin/{rustc,cargo,cargo-clippy,clippy-driver}; rustup's proxies come first on
# PATH, so cross-check puts /usr/bin first for its own commands only.
set -euo pipefail

log() { printf 'provision-cross: %s\n' "$*" >&2; }

pkgs=(rustc-web cargo-web rust-web-src rust-web-clippy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
  else
    log "missing ${missing[*]}: install them (sudo apt-get install ${missing[*]}) and run again"
    exit 1
  fi
fi
for tool in /usr/bin/rustc /usr/bin/cargo /usr/bin/cargo-clippy /usr/bin/clippy-driver; do
  [ -x "$tool" ] || { log "$tool is missing after installing ${pkgs[*]}"; exit 1; }
done
