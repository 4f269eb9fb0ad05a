# libsda — the two commands a newcomer needs:
#   make run    builds everything and prints this machine's device report through the CLI
#   make test   runs every test (Rust, C/C++ through CMake/CTest, artifact checks)
# Both provision what they need themselves (scripts/provision.sh): libtorch from PyPI into .venv
# (reused when present; an existing LIBTORCH is respected) and the Debian packages the tests need.

SHELL := /bin/bash
CARGO ?= cargo
# The build needs LIBTORCH (the torch backend links it); provisioning prints it.
WITH_TORCH = LIBTORCH="$$(bash scripts/provision.sh)"
RELEASE_DIR := $(CURDIR)/target/release
CTEST_DIR := $(CURDIR)/build/ctest

.PHONY: run test build test-rust test-c bench clean

run: build
	$(RELEASE_DIR)/sda info --verbose

build:
	$(WITH_TORCH) $(CARGO) build --release --workspace
	@# Programs link against the SONAME (libsda.so.0); give the build tree the same link as an install.
	ln -sf libsda.so $(RELEASE_DIR)/libsda.so.$$(sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -1)

test: build test-rust test-c

test-rust:
	@# Tests load the debug cdylibs (the backend module), which building test targets does not produce.
	$(WITH_TORCH) $(CARGO) build --workspace --features sda/test-hooks
	$(WITH_TORCH) $(CARGO) nextest run --workspace --features sda/test-hooks --no-fail-fast

test-c: build
	cmake -S tests/c -B $(CTEST_DIR) -DSDA_LIB_DIR=$(RELEASE_DIR) -DSDA_INCLUDE_DIR=$(CURDIR)/include >/dev/null
	cmake --build $(CTEST_DIR) -j 2
	ctest --test-dir $(CTEST_DIR) --output-on-failure

bench: build
	bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf build
