# The README's two commands: `make demo` and `make test` (what CI runs, through .ci/run).

CARGO ?= cargo

.PHONY: build shim test test-matrix lint demo demo-pod demo-pod-oci bench critest conformance

## build: debug binaries of the whole workspace (the tests use them)
build:
	$(CARGO) build --workspace --locked

## shim: the shim as we ship it (static, small): target/shim/containerd-shim-sample-v2
shim:
	bash scripts/build-shim.sh

## demo: the guided walkthrough against a private containerd (as root; installs what it needs)
demo:
	bash scripts/demo.sh $(ARGS)

## demo-pod: the pod tour over the CRI API, against a private containerd with the CRI plugin
demo-pod:
	bash scripts/demo.sh pod $(ARGS)

## test: installs what the tests need (as root), then unit tests and the integration tests
## against a private containerd
test:
	bash scripts/test-prereqs.sh
	$(CARGO) build --workspace --locked
	$(CARGO) test --workspace --locked

## test-matrix: the integration suite against containerd 1.6, 1.7 and 2.1 (CONTAINERD_VERSIONS)
test-matrix:
	bash scripts/test-prereqs.sh
	$(CARGO) build --workspace --locked
	bash scripts/test-matrix.sh

## demo-pod-oci: the pod tour in real containers (handler sample-oci: our shim in the OCI mode)
demo-pod-oci:
	bash scripts/demo.sh pod-oci $(ARGS)

## bench: ours against containerd-shim-runc-v2 in one private containerd; writes bench/RESULTS.md
## (QUICK=1: a smoke run of under a minute, written to target/bench-quick/)
bench:
	bash scripts/bench.sh

## critest: builds critest and crictl (cri-tools 1.36.0, vendored, offline) into target/cri-tools/
critest:
	bash scripts/critest.sh

## conformance: critest against runc-v2, ours in the OCI mode and ours in the host mode (as root)
conformance:
	bash scripts/conformance.sh

## lint: formatting, clippy, docs and unused dependencies, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --workspace --no-deps --locked
	bash scripts/unused-deps.sh
