# Developer and CI entry points. `make help` lists the targets.
#
# Integration tests need the local services: `make services` installs and starts
# PostgreSQL, Redis, RabbitMQ and a 3-broker Kafka (scripts/services.sh up) and writes
# their endpoints to .cache/services.env, which `make test` loads. Without services,
# integration tests skip (or fail with RELIABLE_REQUIRE_SERVICES=1, as in CI).
#
# The repository holds several modules (issue 16): the SDK (the root), and, so
# that their dependencies stay out of every user's module graph, examples/,
# cmd/reliable-soak, cmd/reliablectl, bench/outbox and internal/testenv/containers
# (the testcontainers helper). The committed go.work ties them together: the
# default package pattern, `work`, is every package of every module, and
# `go run ./examples/demo` works from the root. test-go-min checks the SDK
# module alone (GOWORK=off) with the Go release its go directive names.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
ENV_FILE  ?= .cache/services.env
PKGS      ?= work
TESTFLAGS ?=
BENCH     ?= .

# Loads the endpoints written by scripts/services.sh into the recipe's environment.
LOAD_ENV = if [[ -f $(ENV_FILE) ]]; then set -a; . ./$(ENV_FILE); set +a; fi

.PHONY: help demo soak soak-short services services-down services-status test test-unit test-go-min tidy-check test-memory lint fmt fuzz bench ci

help: ## Show this help
	@echo "Usage: make TARGET [PKGS=./producer/...] [TESTFLAGS='-run X -v']"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

demo: ## The order and kitchen services on an embedded, non-durable Kafka, with faults and a summary
	$(GO) run ./examples/demo $(DEMOFLAGS)

services: ## Install and start PostgreSQL, Redis, RabbitMQ, 3-broker Kafka (needs root)
	bash scripts/services.sh up

services-down: ## Stop the local services
	bash scripts/services.sh down

services-status: ## Show which local services run
	bash scripts/services.sh status

# The service smoke tests (internal/smoke, which also kill and restart brokers) run
# first and alone: they fail fast when a service is broken, and their broker kills
# cannot disturb other packages' tests. Then everything else runs, one package at a
# time (-p 1): the fault tests of several packages kill brokers and restart RabbitMQ,
# and run side by side they only wait for each other's locks on 2 cores.
SMOKE_PKG := github.com/reliable-go/reliable/internal/smoke

# gotestsum runs go test and ends with a summary: the tests run, failed and skipped,
# each skip with its reason.
GOTESTSUM ?= gotest.tools/gotestsum@v1.13.0
GOTEST    = $(GO) run $(GOTESTSUM) --format pkgname-and-test-fails --format-hide-empty-pkg --

test: ## Run all tests (unit and integration) with -race; starts the local services when none are configured
	@$(LOAD_ENV); \
	if [[ ! -f $(ENV_FILE) && -z "$${RELIABLE_KAFKA_BROKERS:-}$${RELIABLE_POSTGRES_DSN:-}" ]]; then \
		if [[ $$(id -u) == 0 ]] && command -v apt-get >/dev/null; then \
			echo "make test: no services configured: starting them (scripts/services.sh up)"; \
			bash scripts/services.sh up </dev/null; set -a; . ./$(ENV_FILE); set +a; \
		else \
			echo "make test: no services configured and not root on Debian: integration tests will skip (see make services)"; \
		fi; \
	fi; \
	pkgs=$$($(GO) list $(PKGS)); \
	if grep -qx '$(SMOKE_PKG)' <<<"$$pkgs"; then \
		echo "go test -race -count=1 -timeout 10m $(TESTFLAGS) ./internal/smoke"; \
		$(GOTEST) -race -count=1 -timeout 10m $(TESTFLAGS) $(SMOKE_PKG); \
		pkgs=$$(grep -vx '$(SMOKE_PKG)' <<<"$$pkgs" || true); \
	fi; \
	if [[ -n $$pkgs ]]; then \
		echo "go test -race -count=1 -p 1 -timeout 20m $(TESTFLAGS) $(PKGS) (without ./internal/smoke; work = every module of go.work)"; \
		$(GOTEST) -race -count=1 -p 1 -timeout 20m $(TESTFLAGS) $$pkgs; \
	fi

test-unit: ## Run unit tests only (-short: integration tests skip), fast, no services
	$(GO) test -short -race -count=1 -timeout 5m $(TESTFLAGS) $(PKGS)

# The lowest Go release the SDK supports: the go directive of its go.mod
# (GOTOOLCHAIN=go1.25.0 makes the go command fetch that release from the module
# proxy on first use).
GO_MIN ?= go$(shell awk '$$1 == "go" {print $$2; exit}' go.mod)

test-go-min: ## Build and unit-test (-short) the SDK module alone with its minimum Go release (GO_MIN)
	GOWORK=off GOTOOLCHAIN=$(GO_MIN) $(GO) version
	GOWORK=off GOTOOLCHAIN=$(GO_MIN) $(GO) build ./...
	GOWORK=off GOTOOLCHAIN=$(GO_MIN) $(GO) vet ./...
	GOWORK=off GOTOOLCHAIN=$(GO_MIN) $(GO) test -short -count=1 -timeout 10m $(TESTFLAGS) ./...

tidy-check: ## Fail if go mod tidy would change the go.mod/go.sum of any module of go.work (each alone, GOWORK=off)
	@status=0; for dir in $$($(GO) list -m -f '{{.Dir}}'); do \
		if ! (cd "$$dir" && GOWORK=off $(GO) mod tidy -diff >/dev/null); then \
			echo "tidy-check: go mod tidy would change $${dir#$$PWD/}/go.mod or go.sum"; status=1; fi; \
	done; exit $$status

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: ## go vet, staticcheck, gofmt, and every module's go.mod tidy
	$(MAKE) --no-print-directory tidy-check
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)
	@files=$$(gofmt -l $$(find . -name '*.go' -not -path './.cache/*' -not -path './vendor/*' -not -path './.git/*')); \
	if [[ -n $$files ]]; then echo "gofmt needs to format:"; echo "$$files"; exit 1; fi

test-memory: ## The backlog memory budget check (peak RSS of relay and consumer), without -race; MEMORY_ROWS rows
	@$(LOAD_ENV); RELIABLE_SOAK_MEMORY=1 RELIABLE_SOAK_MEMORY_ROWS=$(MEMORY_ROWS) \
		$(GO) test -count=1 -timeout 15m -run TestBacklogMemoryStaysBounded -v ./cmd/reliable-soak/

MEMORY_ROWS ?= 100000

fuzz: ## Run every fuzz target for FUZZTIME (default 10s) on top of its seed corpus
	bash scripts/fuzz.sh

fmt: ## Format all Go files with gofmt
	gofmt -w $$(find . -name '*.go' -not -path './.cache/*' -not -path './vendor/*' -not -path './.git/*')

bench: ## One Markdown table: each SDK figure beside raw sarama/amqp091-go and watermill, same run
	$(LOAD_ENV); cd bench/report && $(GO) run . $(BENCHFLAGS)

soak: ## Long fault campaign on the real services (default 60 min on Kafka); SOAKFLAGS to change
	$(LOAD_ENV); $(GO) run ./cmd/reliable-soak -broker kafka -duration 60m -faults all $(SOAKFLAGS)

soak-short: ## CI's short campaign: 10k orders on each broker, every fault kind; then the quickstart and zero profiles on both
	$(LOAD_ENV); bash cmd/reliable-soak/ci.sh

ci: ## What CI runs: .ci/run (services up, lint, required integration tests)
	bash .ci/run

# Kafka versions (issue 16): the suite runs on Kafka 4.4.0, scripts/services.sh's default;
# the Kafka smoke and adapter tests also run on 3.9.1, the last 3.x line. A switch stops
# the running cluster and deletes its data (the jars stay cached per version).
KAFKA_OLD_VERSION ?= 3.9.1
KAFKA_SWITCH_BACK ?= 1

.PHONY: services-kafka39 test-kafka39

services-kafka39: ## Switch the local Kafka to 3.9.1 (deletes its data); `make services` switches back to 4.4.0
	RELIABLE_KAFKA_VERSION=$(KAFKA_OLD_VERSION) bash scripts/services.sh kafka-up

test-kafka39: ## Kafka smoke and adapter tests on 3.9.1, then back to 4.4.0 (KAFKA_SWITCH_BACK=0 stays on 3.9.1)
	RELIABLE_KAFKA_VERSION=$(KAFKA_OLD_VERSION) bash scripts/services.sh kafka-up
	@envf=$${RELIABLE_ENV_FILE:-$(ENV_FILE)}; set -a; . "$$envf"; set +a; status=0; \
	echo "$(GO) test -race -count=1 -p 1 -timeout 20m $(TESTFLAGS) ./internal/smoke ./adapters/kafka (Kafka $$RELIABLE_KAFKA_CLUSTER_VERSION)"; \
	$(GO) test -race -count=1 -p 1 -timeout 20m $(TESTFLAGS) ./internal/smoke ./adapters/kafka || status=$$?; \
	if [[ "$(KAFKA_SWITCH_BACK)" == 1 ]]; then bash scripts/services.sh kafka-up; fi; \
	exit $$status
