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
# CI builds once from a fresh clone: incremental compilation's caches would only take disk (about
# 0.6 GB per target directory).
ifeq ($(CI),true)
export CARGO_INCREMENTAL := 0
endif

.PHONY: run test build test-rust test-c bench clean install test-prefix test-install test-python test-swift
.PHONY: test-reliability reliability cross-check test-growth test-prefix-bundled build-backend-2.11 test-backend-2.11
.PHONY: wheel test-wheel

# `make install PREFIX=/any/prefix` (DESTDIR honoured): the core, its backend module beside it, the
# static library, the headers, a CMake package and a relocatable pkg-config file (cmake/CMakeLists.txt).
PREFIX ?= /usr/local
INSTALL_BUILD_DIR := $(CURDIR)/build/install
# The prefix the tests install into and check: the C/CMake/pkg-config hosts, Python and Swift.
TEST_PREFIX := $(CURDIR)/build/test-prefix
# BUNDLE_LIBTORCH=1 (or cuda): also copy the libtorch the backend was built against into
# PREFIX/lib/sda/libtorch (cmake/bundle_libtorch.sh), so that the prefix runs without Python or torch.
BUNDLE_LIBTORCH ?=
# The backend module for libtorch 2.11 (crates/sda_torch_2_11, `make build-backend-2.11`): installed as
# lib/libsda_torch-2.11.so when it has been built.
BACKEND_2_11 := $(CURDIR)/target/torch-2.11/release/libsda_torch.so
# `$(call install_to,PREFIX[,BUNDLE])`: BUNDLE defaults to $(BUNDLE_LIBTORCH).
define install_to
cmake -S cmake -B $(INSTALL_BUILD_DIR) -DSDA_ARTIFACT_DIR=$(RELEASE_DIR) -DSDA_INCLUDE_DIR=$(CURDIR)/include \
  -DSDA_NATIVE_STATIC_LIBS="$$(bash scripts/native_static_libs.sh)" \
  -DSDA_EXTRA_BACKENDS="$$([ -f $(BACKEND_2_11) ] && echo 2.11=$(BACKEND_2_11))" \
  -DSDA_BUNDLE_LIBTORCH="$(if $(2),$(2),$(BUNDLE_LIBTORCH))" -DSDA_LIBTORCH_LIB_DIR="$$(bash scripts/provision.sh)/lib" >/dev/null
DESTDIR="$(DESTDIR)" cmake --install $(INSTALL_BUILD_DIR) --prefix $(1)
endef

run: build
	$(RELEASE_DIR)/sda info --verbose

build:
	$(WITH_TORCH) $(CARGO) build --release --workspace
	@# Programs link against the SONAME (libsda.so.0.2: major.minor before 1.0, the major from 1.0 on);
	@# give the build tree the same link as an install.
	ln -sf libsda.so $(RELEASE_DIR)/$$(objdump -p $(RELEASE_DIR)/libsda.so | awk '$$1 == "SONAME" {print $$2}')

test: build test-rust test-backend-2.11 test-c test-growth test-reliability test-install test-python test-wheel test-swift cross-check test-gpu-kit

test-rust:
	@# Tests load the debug cdylibs (the backend module), which building test targets does not produce.
	$(WITH_TORCH) $(CARGO) build --workspace --features sda/test-hooks
	$(WITH_TORCH) $(CARGO) nextest run --workspace --features sda/test-hooks --no-fail-fast

# Type-checks and lints (clippy -D warnings) the whole workspace for macOS and Windows, which this
# machine cannot build for: Debian's rustc-web compiles the standard library for each target
# (-Zbuild-std; no SDK needed to type-check), and the backend is checked without libtorch or a C++
# compiler (sda_torch's check-only feature); the C that tch's dependencies (zstd-sys, bzip2-sys)
# compile for the target goes to a stub that writes empty objects (scripts/cross-stub-cc.sh), since
# nothing is linked. Libraries and binaries; the tests and the test kit (sda-testkit) are Linux-only (RLIMIT_AS
# and /proc).
CROSS_TARGETS := aarch64-apple-darwin x86_64-pc-windows-msvc
CROSS_STUB := $(CURDIR)/scripts/cross-stub-cc.sh
cross-check:
	bash scripts/provision-cross.sh
	@for target in $(CROSS_TARGETS); do \
	  echo "cross-check: $$target"; \
	  t=$${target//-/_}; \
	  env "CC_$$t=$(CROSS_STUB)" "CXX_$$t=$(CROSS_STUB)" "AR_$$t=$(CROSS_STUB)" SDKROOT=/nonexistent \
	    PATH=/usr/bin:$$PATH RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$(CURDIR)/target/cross \
	    cargo clippy -Zbuild-std=std,panic_abort --target $$target --workspace --exclude sda-testkit \
	    --features sda_torch/check-only -- -D warnings || exit 1; \
	done

test-c: build
	cmake -S tests/c -B $(CTEST_DIR) -DSDA_LIB_DIR=$(RELEASE_DIR) -DSDA_INCLUDE_DIR=$(CURDIR)/include >/dev/null
	cmake --build $(CTEST_DIR) -j 2
	ctest --test-dir $(CTEST_DIR) --output-on-failure

# Structs that grow (issue 11): unchanged C programs against a second build of libsda with one more
# field in every struct (cargo feature sda/abi-growth-test, its own target directory).
test-growth:
	$(WITH_TORCH) bash tests/c/growth.sh $(CURDIR)/build/growth

install: build
	$(call install_to,$(abspath $(PREFIX)))

# A fresh install for the tests below (one per make run: the targets share it). Plain: no libtorch
# in it (BUNDLE_LIBTORCH is ignored here).
test-prefix: build
	rm -rf $(TEST_PREFIX)
	$(call install_to,$(TEST_PREFIX),0) >/dev/null

# The same with BUNDLE_LIBTORCH=1, for the install tests' "runs without Python or torch" checks.
TEST_PREFIX_BUNDLED := $(CURDIR)/build/test-prefix-bundled
test-prefix-bundled: build
	rm -rf $(TEST_PREFIX_BUNDLED)
	$(call install_to,$(TEST_PREFIX_BUNDLED),1) >/dev/null

# Against the installed prefixes, without LD_LIBRARY_PATH: SONAME and layout, the CMake consumer
# (sda::sda and sda::static), pkg-config builds, every program in examples/, sdaConfigVersion's
# major-version rule, DESTDIR, a prefix moved elsewhere, and libtorch found at run time (the build
# tree's torch hidden: the bundled prefix alone, SDA_LIBTORCH, the error without any libtorch, a host
# or Python that brought its own).
test-install: test-prefix test-prefix-bundled
	bash tests/install/run.sh $(TEST_PREFIX) $(TEST_PREFIX_BUNDLED)

# The backend module for libtorch 2.11 (tch 0.24): the same sources in their own Cargo workspace
# (crates/sda_torch_2_11; torch-sys's `links = "tch"` keeps two tch versions out of one graph),
# against torch 2.11.0 from PyPI in .venv-2.11. Release only: one build serves the tests and the
# install (lib/libsda_torch-2.11.so).
# (Run from that folder: its .cargo/config.toml puts the build in target/torch-2.11.)
IN_2_11 = lt="$$(bash scripts/provision.sh --torch 2.11.0)" && cd crates/sda_torch_2_11 && LIBTORCH="$$lt"
build-backend-2.11:
	$(IN_2_11) $(CARGO) build --release --locked

# The backend's tests (crates/sda_torch/tests/*.rs) against the 2.11 module and its libtorch.
test-backend-2.11: build-backend-2.11
	$(IN_2_11) $(CARGO) nextest run --release --locked --no-fail-fast

# The Python binding (pytest, in .venv) against the installed prefix.
test-python: test-prefix
	bash bindings/python/run-tests.sh $(TEST_PREFIX)

# The Python wheel (scripts/wheel.sh): the binding with libsda, both backend modules and the `sda`
# program inside (`python -m sda`); it uses the torch installed beside it.
WHEEL_DIR := $(CURDIR)/build/wheel
wheel: build build-backend-2.11
	bash scripts/wheel.sh $(WHEEL_DIR)

# The wheel in fresh environments next to torch 2.13 and 2.11, without SDA_LIBRARY, and the binding's
# pytest suite against it (tests/wheel/run.sh).
test-wheel: wheel test-prefix
	bash tests/wheel/run.sh $$(ls $(WHEEL_DIR)/sda-*.whl) $(TEST_PREFIX)

# The Swift binding: swift build + XCTest in a Debian trixie root (.swiftroot, created once).
test-swift: test-prefix
	bash bindings/swift/run-tests.sh $(TEST_PREFIX)

# Issue 15, the GPU truth kit (GPU.md): build/gpu-kit/ (under 64 MiB, relocatable) holds the core, the
# CLI, both backend modules (the 2.11 one, which GPU machines with torch 2.11 need, when
# build-backend-2.11 built it), the C checks, examples and bench programs built here, the Python
# binding and run.sh. Carried to a machine with an NVIDIA GPU, `bash run.sh` prints a PASS/FAIL table;
# here test-gpu-kit runs a copy of it elsewhere and checks the honest no-GPU answer (exit 0, no PASS).
.PHONY: gpu-kit test-gpu-kit
gpu-kit: build build-backend-2.11
	bash scripts/gpu-kit.sh $(CURDIR)/build/gpu-kit

test-gpu-kit: gpu-kit
	bash tests/gpu-kit/test-kit.sh $(CURDIR)/build/gpu-kit

bench: build
	bash bench/run.sh

# Issue 12: batch finders on real audio models (HTDemucs, SNAC) under RLIMIT_AS budgets, libsda's probe
# vs Accelerate vs Lightning-style (bench/real_models.sh; about half an hour on two cores; not in test).
.PHONY: bench-models
bench-models: build
	bash bench/real_models.sh

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
