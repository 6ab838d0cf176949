# The two commands of the README, for a fresh Debian machine with only the Rust toolchain:
#   make run    installs what it needs, builds, and starts the services on 127.0.0.1
#   make test   installs what it needs, then fmt, clippy, cargo doc and every test of every backend,
#               with a real single-node Swift and SeaweedFS started for the object-store tests
#               and a throwaway PostgreSQL for the engine's PostgreSQL backend, then the short
#               failover test (three instances of each service behind HAProxy, scripts/ha-test.sh)
# Build output is kept under the user's cache directory between runs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

export CARGO_TARGET_DIR ?= $(HOME)/.cache/lpstore/target
# Link the rocksdb crate against Debian's librocksdb-dev (seconds) instead of building
# RocksDB's C++ sources (20-50 minutes on 2 cores).
export ROCKSDB_LIB_DIR ?= /usr/lib/$(shell gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
export CARGO_TERM_COLOR ?= never

# Debian packages the build and the tests need: RocksDB and bindgen's libclang for the
# `rocksdb` crate, git for the commit-graph agreement tests, curl for the HTTP tests, haproxy
# for the trusted-proxy tests, postgresql for the engine's PostgreSQL backend
# (scripts/with-postgres.sh starts a cluster of its own; the package's service is not used),
# strace for the crash-state test (blobstore/tests/it/crash_states.rs), aria2 and wget for the
# librarian's download-client tests. The tus tests' client (PyPI's tuspy, pinned by hash) is
# installed by scripts/tuspy.sh into ~/.cache/lpstore/, the OpenAPI contract tests' schemathesis
# and openapi-spec-validator (PyPI, pinned by hash) by scripts/schemathesis.sh.
DEBIAN_PACKAGES := librocksdb-dev clang libclang-dev git curl pkg-config haproxy postgresql strace aria2 wget
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup run test bench build fuzz soak load capacity ha

setup:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
	@bash scripts/tuspy.sh python >/dev/null
	@bash scripts/schemathesis.sh install

build: setup
	cargo build --release --workspace

# A hung test fails the run after TEST_TIMEOUT (timeout signals cargo and every test process
# it started) instead of holding CI until its own limit; a cold build plus every test takes
# about 15 minutes.
TEST_TIMEOUT ?= 40m
test: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps
	bash scripts/with-swift.sh bash scripts/with-seaweedfs.sh bash scripts/with-postgres.sh \
	  timeout -k 30 $(TEST_TIMEOUT) cargo test --workspace --all-features --no-fail-fast
	bash scripts/schemathesis.sh
	timeout -k 30 10m bash scripts/ha-test.sh short
	cargo build --manifest-path fuzz/Cargo.toml

run: setup
	bash scripts/run-services.sh

bench: setup
	cargo bench -p benches

# The capacity-planning run: installs its peers (postgresql, nginx, wrk, git) from Debian,
# measures both stores at several scales and the peers on the same data, and writes
# docs/CAPACITY.md and docs/capacity/*.svg (under 30 minutes on 2 cores).
capacity: setup
	bash scripts/capacity.sh

# Runs every cargo-fuzz target for FUZZ_SECONDS each, or for FUZZ_RUNS executions each when
# set (issue 15's long run: `make fuzz FUZZ_RUNS=10000000`, a few hours on a quiet core per
# target: docs/RELIABILITY.md, "Rates"). libFuzzer; RUSTC_BOOTSTRAP lets the stable
# toolchain take the instrumentation flags. New inputs that reach new code are added to
# fuzz/corpus/<target>/; findings land in fuzz/artifacts/. No sanitizer by default: ASan
# made every target 3 to 8 times slower, and the workspace forbids unsafe code, so a memory
# error could only come from a dependency's unsafe code (FUZZ_SANITIZER=address looks for
# that; ASan then keeps no allocation stacks and skips the leak check at exit).
# FUZZ_JOBS=2 runs two libFuzzer workers per target on one shared corpus (each runs FUZZ_RUNS
# executions, or FUZZ_SECONDS; their logs go to fuzz/fuzz-N.log): a 10^7 run of an HTTP target
# in about 1.5 h on two quiet cores instead of 3.
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_JOBS ?= 1
FUZZ_SANITIZER ?= none
FUZZ_LIMIT = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(FUZZ_SECONDS)) \
  $(if $(filter-out 1,$(FUZZ_JOBS)),-jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS))
fuzz: setup
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd fuzz && for target in $$(cargo fuzz list); do \
	  ASAN_OPTIONS=malloc_context_size=0:detect_leaks=0 RUSTC_BOOTSTRAP=1 \
	    cargo fuzz run -s $(FUZZ_SANITIZER) $$target -- $(FUZZ_LIMIT) -timeout=10 2>&1 | tail -n 3; \
	done

# The long crash soaks (docs/RELIABILITY.md): SOAK_KILLS SIGKILLs of each server under load
# (CI runs 5 within `make test`).
SOAK_KILLS ?= 50
soak: setup
	SOAK_KILLS=$(SOAK_KILLS) cargo test -p servers --test it soak -- --nocapture --test-threads 1

# The failover test in its long form (docs/RELIABILITY.md, "Failover"): three instances of
# each service on PostgreSQL behind HAProxy, HA_KILLS SIGKILLs of the leaders under load, a
# rolling restart, PostgreSQL restarted, its synchronous standby promoted (scripts/ha-test.sh;
# `make test` runs the short form: 3 kills and the rolling restart).
HA_KILLS ?= 20
ha: setup
	HA_KILLS=$(HA_KILLS) timeout -k 30 30m bash scripts/ha-test.sh long

# The bounded load test on loopback: DURATION seconds (at most 300) of mixed uploads,
# downloads and graph queries; see scripts/load-test.sh for its settings.
DURATION ?= 60
load: setup
	DURATION=$(DURATION) bash scripts/load-test.sh
