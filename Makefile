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

.PHONY: run test build test-rust test-c bench clean install test-prefix test-install test-python test-swift
.PHONY: test-reliability reliability

# `make install PREFIX=/any/prefix` (DESTDIR honoured): the core, its backend module beside it, the
# static library, the headers, a CMake package and a relocatable pkg-config file (cmake/CMakeLists.txt).
PREFIX ?= /usr/local
INSTALL_BUILD_DIR := $(CURDIR)/build/install
# The prefix the tests install into and check: the C/CMake/pkg-config hosts, Python and Swift.
TEST_PREFIX := $(CURDIR)/build/test-prefix
define install_to
cmake -S cmake -B $(INSTALL_BUILD_DIR) -DSDA_ARTIFACT_DIR=$(RELEASE_DIR) -DSDA_INCLUDE_DIR=$(CURDIR)/include \
  -DSDA_NATIVE_STATIC_LIBS="$$(bash scripts/native_static_libs.sh)" >/dev/null
DESTDIR="$(DESTDIR)" cmake --install $(INSTALL_BUILD_DIR) --prefix $(1)
endef

run: build
	$(RELEASE_DIR)/sda info --verbose

build:
	$(WITH_TORCH) $(CARGO) build --release --workspace
	@# Programs link against the SONAME (libsda.so.0); give the build tree the same link as an install.
	ln -sf libsda.so $(RELEASE_DIR)/libsda.so.$$(sed -n 's/^version = "\([0-9]*\)\..*/\1/p' Cargo.toml | head -1)

test: build test-rust test-c test-reliability test-install test-python test-swift

test-rust:
	@# Tests load the debug cdylibs (the backend module), which building test targets does not produce.
	$(WITH_TORCH) $(CARGO) build --workspace --features sda/test-hooks
	$(WITH_TORCH) $(CARGO) nextest run --workspace --features sda/test-hooks --no-fail-fast

test-c: build
	cmake -S tests/c -B $(CTEST_DIR) -DSDA_LIB_DIR=$(RELEASE_DIR) -DSDA_INCLUDE_DIR=$(CURDIR)/include >/dev/null
	cmake --build $(CTEST_DIR) -j 2
	ctest --test-dir $(CTEST_DIR) --output-on-failure

install: build
	$(call install_to,$(abspath $(PREFIX)))

# A fresh install for the tests below (one per make run: the targets share it).
test-prefix: build
	rm -rf $(TEST_PREFIX)
	$(call install_to,$(TEST_PREFIX)) >/dev/null

# Against the installed prefix, without LD_LIBRARY_PATH: SONAME and layout, the CMake consumer
# (sda::sda and sda::static), pkg-config builds, every program in examples/, sdaConfigVersion's
# major-version rule, DESTDIR, and a prefix moved elsewhere.
test-install: test-prefix
	bash tests/install/run.sh $(TEST_PREFIX)

# The Python binding (pytest, in .venv) against the installed prefix.
test-python: test-prefix
	bash bindings/python/run-tests.sh $(TEST_PREFIX)

# The Swift binding: swift build + XCTest in a Debian trixie root (.swiftroot, created once).
test-swift: test-prefix
	bash bindings/swift/run-tests.sh $(TEST_PREFIX)

bench: build
	bash bench/run.sh

clean:
	$(CARGO) clean
	rm -rf build

# Issue 7, bounded (part of make test): the C/C++ tests under AddressSanitizer + UBSan, valgrind
# memcheck over the tests that load no libtorch and over the Rust fuzz driver. The Rust reliability
# tests (tests/reliability_*.rs) run in test-rust at their bounded sizes.
test-reliability: test-c
	bash scripts/reliability.sh --bounded

# Issue 7, long: every reliability run at its long size; rewrites RELIABILITY.md from the results.
reliability: build
	bash scripts/reliability.sh --long
