# Beacon — build, test and run.
#
#   make up      start a 3-node cluster, two load balancers and demo services (docker compose)
#   make test    run every test (race detector on), vet, gofmt and the dependency check
#   make chaos   the fault suite: CHAOS_RUNS runs of CHAOS_DURATION each (docs/chaos.md)
#
SHELL := /bin/bash
GO ?= go
# The Go release we build and test with. go1.26.8's standard library has
# vulnerabilities fixed in go1.27.3 (govulncheck finds them: docs/security.md);
# the go command fetches this toolchain from the module proxy once (~76 MB).
# Shells outside make need the same export (README).
export GOTOOLCHAIN := go1.27.3
BIN := bin/beacon
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/beaconhq/beacon/cmd.Version=$(VERSION) -X github.com/beaconhq/beacon/cmd.Commit=$(COMMIT)
PKGS := ./...

IMAGE ?= beacon:local
# Compose v2 (`docker compose`) where it is installed, else docker-compose 1.x.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
# progress.sh says what a long step does, how long it takes the first time,
# and that it is still running, so that no step is silent (issue 19).
PROGRESS := ./scripts/progress.sh
COMPOSE_PROJECT ?= beacon
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: all build test test-nested unit lint vet fmt-check depcheck vulncheck bench bench-lb clean image up down chaos soak

all: build

## build: a static bin/beacon (CGO disabled), usable FROM scratch
build:
	@$(PROGRESS) "go build $(BIN)" "$(FIRST_BUILD)" \
	  env CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/beacon

# Measured with empty Go caches (docs/compose.md, "Measured").
FIRST_BUILD := the first time on a machine: Go toolchain $(GOTOOLCHAIN) ~76 MB and the modules are downloaded, then a cold compile; 3-12 min; later builds take seconds

## image: the container image $(IMAGE), FROM scratch around bin/beacon (nothing is pulled)
image: build
	@mkdir -p dist/data
	@if [ -r $(CA_BUNDLE) ]; then cp $(CA_BUNDLE) dist/ca-certificates.crt; \
	else echo "warning: no CA bundle at $(CA_BUNDLE); HTTPS health checks will fail" >&2; : > dist/ca-certificates.crt; fi
	@old=$$(docker images -q $(IMAGE)); \
	$(PROGRESS) "docker build $(IMAGE)" "FROM scratch around bin/beacon, nothing pulled: seconds" \
	  env DOCKER_BUILDKIT=0 docker build --quiet --tag $(IMAGE) . >dist/docker-build.log 2>&1 || { cat dist/docker-build.log; exit 1; }; \
	new=$$(docker images -q $(IMAGE)); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then docker rmi $$old >/dev/null 2>&1 || true; fi; \
	echo "built image $(IMAGE) ($$new)"

## up: build everything, start the compose cluster, wait for a leader, print where to look
up: image
	BEACON_PROJECT=$(COMPOSE_PROJECT) BEACON_IMAGE=$(IMAGE) COMPOSE="$(COMPOSE)" ./scripts/up.sh

# The label value compose gives the project's containers (as scripts/lib.sh).
COMPOSE_LABEL = $(shell printf '%s' '$(COMPOSE_PROJECT)' | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9_-')

## down: remove the compose cluster's containers, network and volumes. Compose
## removes the named volumes and the anonymous volumes Docker created with a
## container, but not an anonymous volume it carried over by name into a
## recreated container (images built before the Dockerfile dropped VOLUME gave
## every container one): those of the project's containers (64 hex digits, the
## only names Docker gives anonymous volumes) are removed after it.
down:
	@ids=$$(docker ps -aq --filter label=com.docker.compose.project=$(COMPOSE_LABEL) 2>/dev/null); \
	anon=$$( [ -z "$$ids" ] || docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{println .Name}}{{end}}{{end}}' $$ids 2>/dev/null | grep -E '^[0-9a-f]{64}$$' | sort -u); \
	echo "BEACON_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) --profile join-demo down --volumes --remove-orphans --timeout 10"; \
	BEACON_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) --profile join-demo down --volumes --remove-orphans --timeout 10 || exit 1; \
	for v in $$anon; do \
	  if docker volume inspect $$v >/dev/null 2>&1; then \
	    if docker volume rm $$v >/dev/null; then echo "Removing anonymous volume $$v"; \
	    else echo "warning: anonymous volume $$v of the project is left (in use?)" >&2; fi; \
	  fi; \
	done

## test: lint, then every test with the race detector (includes one short
## chaos run, about 2-3 minutes, against the freshly built bin/beacon)
test: lint build
	@$(PROGRESS) "go test -race ./... (every package; lines appear as packages finish)" "the first time the race-enabled compile adds minutes; the chaos test alone runs ~2 min, the compose end-to-end test 1-4 min" \
	  env CHAOS_BINARY=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m $(PKGS)
	@$(MAKE) --no-print-directory test-nested

# Nested Go modules (a go.mod below the root) hold tests that drive Beacon with
# real consumers' code (the Consul API client, Prometheus, a browser) whose
# module graphs stay out of Beacon's own go.mod. Each runs with its own go test.
NESTED := $(sort $(patsubst %/go.mod,%,$(shell git ls-files '*/go.mod' 2>/dev/null)))

## test-nested: the nested modules' tests alone (docs/consul.md, docs/ui.md)
test-nested: build
	@for m in $(NESTED); do \
	  echo "== go test ./... in $$m (nested module)"; \
	  (cd $$m && BEACON_BINARY=$(CURDIR)/$(BIN) $(GO) vet ./... && BEACON_BINARY=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 15m ./...) || exit 1; \
	done

## chaos: the fault suite (root: network namespaces). Configure with
## CHAOS_RUNS (default 1), CHAOS_DURATION (90s), CHAOS_SEED (random, printed),
## CHAOS_FAULTS, CHAOS_OUT; e.g. make chaos CHAOS_RUNS=20 CHAOS_DURATION=60s
chaos: build
	CHAOS_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 0 -v -run '^TestChaos$$' ./cluster/chaostest/

## soak: sustained load without faults for CHAOS_SOAK (default 10m), with
## heap and goroutines sampled from every agent through --enable-pprof
soak: build
	CHAOS_SOAK=$${CHAOS_SOAK:-10m} CHAOS_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 0 -v -run '^TestSoak$$' ./cluster/chaostest/

## unit: fast tests only (no clusters, no processes, no containers)
unit:
	$(GO) test -short -count=1 $(PKGS)

## lint: go vet, gofmt, the import-direction check and govulncheck
lint: vet fmt-check depcheck vulncheck

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## depcheck: imports flow one way (docs/architecture.md)
depcheck:
	@./scripts/depcheck.sh

## bench: the project's performance targets, side by side with etcd (built from the
## module proxy): committed registrations/s, discovery reads/s, failover, dead-node
## detection, RSS with 10k instances; then the load balancer; figures in docs/benchmarks.md
bench: build
	@etcd=$$(./scripts/build-etcd.sh); grpc=$$(./scripts/build-etcd-grpc-load.sh); \
	$(GO) run ./scripts/bench -beacon $(BIN) $${etcd:+-etcd $$etcd} $${grpc:+-etcd-grpc $$grpc} $(BENCH_FLAGS)
	$(MAKE) --no-print-directory bench-lb
	$(GO) test -run '^$$' -bench 'BenchmarkDiscoveryHandler|BenchmarkRegisterHandler' -benchtime 2s ./api/
	$(GO) test -run '^$$' -bench 'BenchmarkConsulRatio' -benchtime 2s ./api/consul/

## bench-lb: requests/s and added latency through `beacon lb` vs the backend directly
## (and nginx when installed), throughput with wrk when installed (issue 18's yardstick;
## the Go load generator otherwise), three rounds and their medians (-rounds);
## BENCH_LB_FLAGS="-wrk -duration 20s" to change it,
## BENCH_LB_FLAGS= for the Go load generator
BENCH_LB_FLAGS ?= -wrk
bench-lb: build
	$(GO) run ./scripts/benchlb -beacon $(BIN) $(BENCH_LB_FLAGS)

## vulncheck: govulncheck, offline, against a vulnerability database built from
## the golang.org/x/vulndb module (its data/osv holds one OSV file per entry;
## the module's own cmd/indexdb turns them into the v1 database layout that
## `govulncheck -db file://` reads). Pinned versions; tools go to bin/tools.
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
TOOLS := $(CURDIR)/bin/tools/$(GOTOOLCHAIN)
VULNDB := $(CURDIR)/bin/vulndb/$(VULNDB_VERSION)

vulncheck: $(TOOLS)/govulncheck $(VULNDB)/index/db.json
	@$(PROGRESS) "govulncheck ./... (offline database)" "about 1 min" \
	  $(TOOLS)/govulncheck -db file://$(VULNDB) ./...

# Built with the same toolchain as the code: govulncheck type-checks the
# standard library of the go command it runs with.
$(TOOLS)/govulncheck:
	@$(PROGRESS) "installing govulncheck $(GOVULNCHECK_VERSION) into $(TOOLS)" "once: download and compile, 1-4 min" \
	  env GOBIN=$(TOOLS) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

$(TOOLS)/indexdb:
	@$(PROGRESS) "installing the vulnerability database indexer (golang.org/x/vulndb/cmd/indexdb)" "once: downloads the x/vulndb module, 3-14 min" \
	  env GOBIN=$(TOOLS) $(GO) install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)

$(VULNDB)/index/db.json: $(TOOLS)/indexdb
	@tmp=$$(mktemp -d); \
	src=$$(cd $$tmp && $(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	rm -rf $$tmp; \
	test -d "$$src/data/osv" || { echo "vulncheck: golang.org/x/vulndb@$(VULNDB_VERSION) has no data/osv"; exit 1; }; \
	rm -rf $(VULNDB); $(PROGRESS) "building the offline vulnerability database in $(VULNDB)" "once, under a minute" \
	  $(TOOLS)/indexdb -vulns "$$src/data/osv" -out $(VULNDB) && \
	echo "vulncheck: database of $$(ls $(VULNDB)/ID/*.json | wc -l) entries in $(VULNDB)"

clean:
	rm -rf bin dist
