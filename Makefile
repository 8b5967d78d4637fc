# meshfed developer tasks. Everything here works on a fresh machine with only
# Go (and make, git, bash) installed: Go modules and the pinned tools are
# downloaded on first use; tools go into .bin/ (git-ignored).
#
#   make build       bin/meshfed
#   make test        go vet + every test (no -race: too slow on 2 cores)
#   make test-long   the long linearizability and Jepsen checks of the hub
#   make e2e         the end-to-end suite alone (./e2e: the user stories; also in make test)
#   make lint        gofmt, go vet, golangci-lint (config: .golangci.yml)
#   make proto       buf lint + buf generate
#   make proto-check regenerate and fail if the generated code changed
#   make bench       benchmarks, one iteration each (BENCH_PKGS)
#   make ui-tools    chromium (apt-get) and playwright-core + axe-core (npm, into
#                    .ui-tools/) for the web UI's browser tests
#   make conformance the MCS API conformance suite against testenv clusters
#                    (MCS_API=<checkout of kubernetes-sigs/mcs-api>)
#   make kind-images, kind-up, e2e-kind, kind-down
#                    kind clusters with real pods, built offline (docs/testing.md)
#   make dev         a local federation that carries traffic: hub, 3 clusters with
#                    agents, gateways and workloads, supervised (bin/meshfed dev)
#   make clean       remove bin/ and .dev/ (make clean-tools also removes .bin/ and .ui-tools/)

GO    ?= go
GOFMT ?= $(shell $(GO) env GOROOT)/bin/gofmt

BIN_DIR := $(CURDIR)/.bin

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# TEST_DEPS: targets that must be built before `make test`: testenv runs
# kube-apiserver and etcd built from source (testenv-bins), and for clusters
# with simulated pods kube-controller-manager, kube-scheduler and kwok
# (testenv-pod-bins).
# ui-tools: chromium and the npm packages the web UI's browser tests drive it
# with (hub/ui/uitest); without them those tests fail, they do not skip.
TEST_DEPS ?= testenv-bins testenv-pod-bins spire-bin ui-tools

# BENCH_PKGS: packages whose benchmarks `make bench` runs.
# Each of these runs its fixed workload once (-benchtime 1x).
BENCH_PKGS ?= ./hub/... ./agent/... ./testenv/... ./eastwest/...
# Micro-benchmarks (per-operation costs) that need many iterations.
BENCH_MICRO_PKGS ?= ./trust/... ./federation/policy/...

# Pinned tool versions. Bump here; `make lint` / `make proto` reinstall a tool
# whose binary in .bin/ was built from a different version.
GOLANGCI_LINT_VERSION      := v2.15.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
BUF_VERSION                := v1.75.0

# Generated code checked by proto-check.
GENERATED_DIRS := federation/v1 gateway/v1 hub/internal/hubpb

# go-install installs package $(2) at version $(3) into .bin/ as $(1), unless
# .bin/$(1) is already that package built at that version (as recorded in the
# binary's build info, see `go version -m`).
define go-install
	@if ! $(GO) version -m $(BIN_DIR)/$(1) 2>/dev/null | \
		awk -v p='$(2)' -v v='$(3)' '$$1 == "path" && $$2 == p { a = 1 } $$1 == "mod" && $$3 == v { b = 1 } END { exit !(a && b) }'; then \
		echo "installing $(2)@$(3) into $(BIN_DIR)"; \
		GOBIN=$(BIN_DIR) $(GO) install $(2)@$(3); \
	fi
endef

.PHONY: all
all: build

.PHONY: build
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/meshfed ./cmd/meshfed

.PHONY: test
test: $(TEST_DEPS)
	$(GO) vet ./...
	# -p 1: packages run one at a time. Tests kill and restart servers on
	# fixed ports; a test in another package picking "free" ports at the same
	# moment could take them in between.
	$(GO) test -p 1 -count=1 -timeout 25m ./...

# e2e runs the end-to-end suite alone: the stories users come for, against
# real processes (package e2e; docs/testing.md, "End-to-end suite"). make
# test runs it too, with everything else.
.PHONY: e2e
e2e: $(TEST_DEPS)
	$(GO) test -p 1 -count=1 -timeout 15m ./e2e/

.PHONY: test-long
test-long: $(TEST_DEPS)
	MESHFED_LINEARIZABILITY=long $(GO) test -count=1 -timeout 30m -run TestLinearizability ./hub/
	# 10 minutes of leader kills, pauses and partitions against real
	# processes; MESHFED_JEPSEN_SEED=<seed from the log> replays a schedule.
	MESHFED_JEPSEN=long $(GO) test -count=1 -timeout 30m -v -run TestJepsen ./hub/

# testenv-bins builds kube-apiserver and etcd from source (tools/testenv) into
# a versioned cache folder, once; see scripts/testenv-bins.sh and
# docs/testing.md. MESHFED_KUBE_APISERVER / MESHFED_ETCD skip the build.
# spire-bin builds spire-server (tools/spire) into the same cache, once, for
# the SPIRE interop test (hub/spire_test.go); see scripts/spire-bin.sh.
.PHONY: spire-bin
spire-bin:
	./scripts/spire-bin.sh >/dev/null

.PHONY: testenv-bins
testenv-bins:
	GO=$(GO) ./scripts/testenv-bins.sh

# testenv-pod-bins builds what a testenv cluster with simulated pods runs
# (testenv.Cluster.Pods, `testenv up --pods`): kube-controller-manager and
# kube-scheduler from tools/testenv, like kube-apiserver, and kwok from
# tools/kwok with kwok's stock stages as its config (scripts/kwok-bin.sh).
# About 8 minutes once kube-apiserver is built; cached afterwards.
.PHONY: testenv-pod-bins
testenv-pod-bins: testenv-bins
	GO=$(GO) ./scripts/testenv-bins.sh kube-controller-manager kube-scheduler
	GO=$(GO) ./scripts/kwok-bin.sh

# conformance runs the MCS API project's conformance suite against
# `testenv up --pods`, from a checkout of kubernetes-sigs/mcs-api outside
# this repository: make conformance MCS_API=/path/to/mcs-api. Not part of
# `make test`; see docs/testing.md.
.PHONY: conformance
conformance: testenv-pod-bins
	GO=$(GO) ./scripts/conformance.sh "$(MCS_API)"

# kind clusters with real pods, with no registry (docs/testing.md, "The kind
# backend"): kind-images builds the node image from source (Debian
# debootstrap + Kubernetes, etcd, CoreDNS built through the Go module proxy;
# about 20 minutes cold, cached in ~/.cache/meshfed/kind/); kind-up starts
# dockerd if needed, creates the clusters and installs meshfed (hub,
# agents, gateways, CoreDNS forwarding, sample workloads); e2e-kind runs the
# stories of ./e2e/kind/ against them; kind-down deletes them.
# Not part of `make test`.
.PHONY: kind-images
kind-images:
	scripts/kind/images.sh

.PHONY: kind-up
kind-up:
	scripts/kind/up.sh

.PHONY: e2e-kind
e2e-kind:
	scripts/kind/e2e.sh

.PHONY: kind-down
kind-down:
	scripts/kind/down.sh

.PHONY: lint-tools
lint-tools:
	$(call go-install,golangci-lint,github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: lint
lint: lint-tools
	@echo "gofmt -l (generated *.pb.go excluded)"
	@out=$$(find . -type f -name '*.go' ! -name '*.pb.go' \
		! -path './.*' ! -path './bin/*' ! -path './vendor/*' ! -path '*/testdata/*' -print0 | \
		xargs -0 $(GOFMT) -l); \
	if [ -n "$$out" ]; then echo "these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN_DIR)/golangci-lint run ./...

.PHONY: proto-tools
proto-tools:
	$(call go-install,protoc-gen-go,google.golang.org/protobuf/cmd/protoc-gen-go,$(PROTOC_GEN_GO_VERSION))
	$(call go-install,protoc-gen-go-grpc,google.golang.org/grpc/cmd/protoc-gen-go-grpc,$(PROTOC_GEN_GO_GRPC_VERSION))
	$(call go-install,buf,github.com/bufbuild/buf/cmd/buf,$(BUF_VERSION))

# buf.gen.yaml runs the plugins from .bin/ by relative path, so buf runs from
# the repository root.
.PHONY: proto
proto: proto-tools
	$(BIN_DIR)/buf lint
	$(BIN_DIR)/buf generate

.PHONY: proto-check
proto-check: proto
	@git diff --exit-code -- $(GENERATED_DIRS) || { \
		echo "generated code is out of date: run 'make proto' and commit the result"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- $(GENERATED_DIRS)); \
	if [ -n "$$untracked" ]; then echo "files under $(GENERATED_DIRS) are not committed:"; echo "$$untracked"; exit 1; fi

# ui-tools installs what the web UI's browser tests (hub/ui/uitest) run:
# Debian's chromium (apt-get, unless on the PATH), and playwright-core and
# axe-core at the versions locked in tools/ui/package-lock.json, with `npm
# ci` into .ui-tools/ (git-ignored), again only when the lock changed.
# playwright-core downloads no browser; the UI itself needs none of this.
UI_TOOLS_DIR := $(CURDIR)/.ui-tools
.PHONY: ui-tools
ui-tools: $(UI_TOOLS_DIR)/node_modules/.package-lock.json
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium (apt-get)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; \
	fi

$(UI_TOOLS_DIR)/node_modules/.package-lock.json: tools/ui/package.json tools/ui/package-lock.json
	@command -v npm >/dev/null || { echo "make ui-tools needs node and npm (Node.js 20 or later)"; exit 1; }
	mkdir -p $(UI_TOOLS_DIR)
	cp tools/ui/package.json tools/ui/package-lock.json $(UI_TOOLS_DIR)/
	cd $(UI_TOOLS_DIR) && npm ci --ignore-scripts --no-audit --no-fund
	@touch $@

# bench-tools installs the load generator and the peer the gateway benchmark
# compares with (BenchmarkGatewayDataPath): h2load (nghttp2-client) and
# haproxy, from Debian's packages, unless they are on the PATH.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: bench-tools
bench-tools:
	@if ! command -v h2load >/dev/null || ! command -v haproxy >/dev/null; then \
		echo "installing nghttp2-client and haproxy (apt-get)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nghttp2-client haproxy; \
	fi

.PHONY: bench
bench: $(TEST_DEPS) bench-tools
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -count 1 -timeout 30m $(BENCH_PKGS)
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 300ms -count 1 -timeout 10m $(BENCH_MICRO_PKGS)
	# meshfed dev's time to ready, cold and resumed, over 5 rounds (goal: under 3 s).
	$(GO) test -p 1 -run '^$$' -bench DevTimeToReady -benchtime 5x -count 1 -timeout 10m ./internal/e2e/
	# The web UI's page time against meshfed dev: navigation to the topology
	# drawn, 10 cold loads in chromium (needs ui-tools, part of TEST_DEPS).
	$(GO) test -p 1 -run '^$$' -bench UIPageTime -benchtime 1x -count 1 -timeout 10m ./internal/e2e/

# MESHFED_DEV_DIR (default .dev), MESHFED_DEV_PORT (default 7400) and
# MESHFED_DEV_ONESHOT=1 (stop once ready, a smoke test) are read by
# meshfed dev itself.
.PHONY: dev
dev: build
	bin/meshfed dev

.PHONY: clean
clean:
	rm -rf bin .dev

.PHONY: clean-tools
clean-tools:
	rm -rf .bin .ui-tools
