# ambientd — `make demo` and `make test` install what is missing first.
SHELL := /bin/bash
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
CLANG ?= clang
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -I$(ARCH_INC)
NODE := node

.PHONY: all deps build bpf native ts demo test lint format test-unit test-privileged test-workers1 test-dual test-ipv4 test-vm test-demo bench audit clean sandbox-down image image-bases test-image test-container

all: build

deps:
	@./scripts/install-deps.sh

bpf/ambient.bpf.o: bpf/ambient.bpf.c bpf/ambient.h
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bpf: deps bpf/ambient.bpf.o

build/Release/ambient_native.node: binding.gyp $(wildcard native/*.cc native/*.h)
	npx node-gyp rebuild --loglevel=error

native: deps build/Release/ambient_native.node

ts: deps
	npx tsc -p tsconfig.json

build: bpf native ts

demo: build
	$(NODE) dist/src/cli.js demo

test: build test-unit lint test-privileged test-workers1 test-demo test-vm test-container

# house style: eslint (typescript-eslint), prettier, clang-format for native/ and bpf/
C_SOURCES := $(wildcard native/*.cc native/*.h bpf/*.c bpf/*.h)
lint: deps
	npx eslint .
	npx prettier --check .
	clang-format --dry-run --Werror $(C_SOURCES)

# rewrites the sources in the house style (what `make lint` checks)
format: deps
	npx prettier --write .
	clang-format -i $(C_SOURCES)

test-unit:
	$(NODE) --test --test-reporter=spec dist/test/unit/

# The privileged suite runs on dual-stack pods: every sandbox that does not name its address
# family gets 10.244.<n>.<p> and fd00:10:244:<n>::<p> (AMBIENTD_SANDBOX_IP_FAMILY=dual), so
# the whole suite proves both families at once; `make test-container` runs the core files on
# IPv4-only pods, and `make test-ipv4` the whole suite on them (not part of `make test`).
# The agents run 2 data-plane workers (docs/WORKERS.md; AMBIENTD_SANDBOX_WORKERS), and
# test-workers1 runs the core capture/HBONE/policy files again with 1.
test-privileged:
	AMBIENTD_SANDBOX_IP_FAMILY=dual AMBIENTD_SANDBOX_WORKERS=2 $(NODE) --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec dist/test/privileged/

CORE_TESTS = $(addprefix dist/test/privileged/,datapath.test.js hbone.test.js services-policy.test.js client-address.test.js)
test-workers1:
	AMBIENTD_SANDBOX_IP_FAMILY=dual AMBIENTD_SANDBOX_WORKERS=1 $(NODE) --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec $(CORE_TESTS)

IPV4_TESTS = $(filter-out dist/test/privileged/container.test.js,$(wildcard dist/test/privileged/*.test.js))
test-ipv4:
	AMBIENTD_SANDBOX_IP_FAMILY=ipv4 $(NODE) --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec $(IPV4_TESTS)

# kept for muscle memory: what test-privileged now does
test-dual: test-privileged

# the demo checks every claim it prints and exits non-zero when one is false
test-demo:
	$(NODE) dist/src/cli.js demo

test-vm:
	$(NODE) --test --test-timeout=900000 --test-reporter=spec dist/test/vm/

bench: build
	$(NODE) dist/bench/run.js

# The container image (docs/IMAGE.md): installs podman/buildah/runc/debootstrap
# if missing, builds the local base images if missing, then the Dockerfile.
image:
	./scripts/image/build.sh

# only the local stand-ins for node:20-bookworm(-slim); FORCE=1 rebuilds them
image-bases:
	./scripts/image/bases.sh $(if $(FORCE),--force)

# The privileged tests with every sandbox agent (and `cleanup`) run from the image, as the
# DaemonSet runs them (docs/IMAGE.md). Needs dist/ (make ts). sandbox.test.js is left out: it
# tests the launcher itself with fake agents.
IMAGE_TESTS = $(filter-out dist/test/privileged/sandbox.test.js,$(wildcard dist/test/privileged/*.test.js))
test-image: image
	AMBIENTD_SANDBOX_IMAGE=localhost/ambientd:0.1.0 AMBIENTD_SANDBOX_IP_FAMILY=ipv4 $(NODE) --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec $(IMAGE_TESTS)

# The part of test-image that `make test` (and CI) runs: the container tests (each capability and
# mount left out, podman kill fails closed), capture, HBONE across two containerised agents, the
# rolling restart between containers and `cleanup` from the image. Builds the local bases and the
# image first when missing (a fresh machine: about 4 minutes; docs/IMAGE.md).
CONTAINER_TESTS = $(addprefix dist/test/privileged/,container.test.js datapath.test.js hbone.test.js restart.test.js cleanup.test.js)
test-container: image
	AMBIENTD_SANDBOX_IMAGE=localhost/ambientd:0.1.0 AMBIENTD_SANDBOX_IP_FAMILY=ipv4 $(NODE) --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec $(CONTAINER_TESTS)

sandbox-down:
	-$(NODE) dist/src/cli.js sandbox down

clean:
	rm -rf dist build bpf/*.o
