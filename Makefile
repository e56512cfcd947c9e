# Beacon — build, test and run.
#
#   make up      start a 3-node cluster, two load balancers and demo services (docker compose)
#   make test    run every test (race detector on), vet, gofmt and the dependency check
#
SHELL := /bin/bash
GO ?= go
BIN := bin/beacon
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/beaconhq/beacon/cmd.Version=$(VERSION) -X github.com/beaconhq/beacon/cmd.Commit=$(COMMIT)
PKGS := ./...

IMAGE ?= beacon:local
COMPOSE ?= docker-compose
COMPOSE_PROJECT ?= beacon
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: all build test unit lint vet fmt-check depcheck bench bench-lb clean image up down

all: build

## build: a static bin/beacon (CGO disabled), usable FROM scratch
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/beacon

## image: the container image $(IMAGE), FROM scratch around bin/beacon (nothing is pulled)
image: build
	@mkdir -p dist/data
	@if [ -r $(CA_BUNDLE) ]; then cp $(CA_BUNDLE) dist/ca-certificates.crt; \
	else echo "warning: no CA bundle at $(CA_BUNDLE); HTTPS health checks will fail" >&2; : > dist/ca-certificates.crt; fi
	@old=$$(docker images -q $(IMAGE)); \
	DOCKER_BUILDKIT=0 docker build --quiet --tag $(IMAGE) . >dist/docker-build.log 2>&1 || { cat dist/docker-build.log; exit 1; }; \
	new=$$(docker images -q $(IMAGE)); \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then docker rmi $$old >/dev/null 2>&1 || true; fi; \
	echo "built image $(IMAGE) ($$new)"

## up: build everything, start the compose cluster, wait for a leader, print where to look
up: image
	BEACON_PROJECT=$(COMPOSE_PROJECT) BEACON_IMAGE=$(IMAGE) COMPOSE="$(COMPOSE)" ./scripts/up.sh

## down: remove the compose cluster's containers, network and volumes
down:
	BEACON_IMAGE=$(IMAGE) $(COMPOSE) -p $(COMPOSE_PROJECT) --profile join-demo down --volumes --remove-orphans --timeout 10

## test: lint, then every test with the race detector
test: lint build
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## unit: fast tests only (no clusters, no processes, no containers)
unit:
	$(GO) test -short -count=1 $(PKGS)

## lint: go vet, gofmt and the import-direction check
lint: vet fmt-check depcheck

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
	@etcd=$$(./scripts/build-etcd.sh); \
	$(GO) run ./scripts/bench -beacon $(BIN) $${etcd:+-etcd $$etcd} $(BENCH_FLAGS)
	$(MAKE) --no-print-directory bench-lb
	$(GO) test -run '^$$' -bench 'BenchmarkDiscoveryHandler|BenchmarkRegisterHandler' -benchtime 2s ./api/

## bench-lb: requests/s and added latency through `beacon lb` vs the backend directly
## (and nginx when installed); BENCH_LB_FLAGS="-wrk -duration 20s" to change it
bench-lb: build
	$(GO) run ./scripts/benchlb -beacon $(BIN) $(BENCH_LB_FLAGS)

clean:
	rm -rf bin dist
