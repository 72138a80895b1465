# herd — see README.md. Two commands matter: `make demo` and `make test`.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH   ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
VPKG     := github.com/prometheus/common/version
LDFLAGS  := -s -w -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(COMMIT) -X $(VPKG).Branch=$(BRANCH) \
            -X $(VPKG).BuildUser=$(shell id -un)@$(shell hostname) -X $(VPKG).BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
TEST_TIMEOUT ?= 45m
FUZZTIME ?= 60s

.PHONY: build
build: ## Build bin/herd with version information.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/herd ./cmd/herd

IMAGE ?= herd:$(VERSION)

.PHONY: image
image: ## Build the container image $(IMAGE) with docker build (needs a Docker engine with BuildKit).
	docker build \
	  --build-arg VERSION=$(VERSION) --build-arg REVISION=$(COMMIT) --build-arg BRANCH=$(BRANCH) \
	  --build-arg BUILD_USER=$(shell id -un)@$(shell hostname) \
	  --build-arg BUILD_DATE=$(shell date -u +%Y%m%d-%H:%M:%S) \
	  --build-arg CREATED=$(shell date -u +%Y-%m-%dT%H:%M:%SZ) \
	  -t $(IMAGE) .

.PHONY: deps
deps: ## Install what the tests need from Debian (Prometheus, Alertmanager) when missing.
	@missing=(); \
	command -v prometheus >/dev/null || missing+=(prometheus); \
	command -v promtool >/dev/null || missing+=(prometheus); \
	command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || missing+=(prometheus-alertmanager); \
	if (( $${#missing[@]} )); then \
	  sudo=; [[ $$(id -u) == 0 ]] || sudo=sudo; \
	  echo "installing Debian packages: $${missing[*]}"; \
	  $$sudo apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$(printf '%s\n' "$${missing[@]}" | sort -u) >/dev/null; \
	fi; \
	prometheus --version 2>&1 | head -1; (prometheus-alertmanager --version 2>&1 || alertmanager --version 2>&1) | head -1

.PHONY: controlplane
controlplane: ## Build kube-apiserver, etcd, etcdutl and kubemark's hollow node (real kubelet, kube-proxy) from Go modules (cached outside the work tree).
	bash test/tools/controlplane/build.sh

.PHONY: test
test: deps controlplane vet rules-check chart-check ## Unit and real-control-plane tests, with the race detector.
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

.PHONY: e2e
e2e: deps controlplane ## Only the end-to-end suite: the responder, the mixin and the five incident drills on the real stack (make test runs it too); RUN='TestResponder/uncordon' runs one behaviour.
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -v -run '$(RUN)' ./test/e2e/

.PHONY: vet
vet: ## go vet and gofmt.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [[ -n "$$unformatted" ]]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

JSONNET     := $(GO) tool jsonnet
JSONNETFMT  := $(GO) tool jsonnetfmt
RULES_GEN   := $(JSONNET) -J rules -S -c -m
# Every jsonnet source of the mixin (vendor/ is jsonnet-bundler's, not ours).
RULES_SRC    = $$(find rules -path rules/vendor -prune -o \( -name '*.libsonnet' -o -name '*.jsonnet' \) -type f -print | sort)

.PHONY: rules
rules: ## Regenerate the mixin's committed output: rules/prometheus_{alerts,rules}.yaml, rules/dashboards_out/.
	rm -rf rules/dashboards_out
	$(RULES_GEN) rules rules/generate.jsonnet >/dev/null

.PHONY: rules-fmt
rules-fmt: ## Format every jsonnet file of the mixin in place.
	$(JSONNETFMT) -i $(RULES_SRC)

.PHONY: rules-check
rules-check: deps ## Generated mixin output up to date, jsonnet formatted, promtool check and test rules.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(RULES_GEN) "$$tmp" rules/generate.jsonnet >/dev/null; \
	mkdir -p "$$tmp/dashboards_out"; committed=rules/dashboards_out; [[ -d $$committed ]] || committed=$$tmp/none; mkdir -p "$$tmp/none"; \
	stale=0; \
	for f in prometheus_alerts.yaml prometheus_rules.yaml; do \
	  diff -u "rules/$$f" "$$tmp/$$f" || stale=1; \
	done; \
	diff -ru "$$committed" "$$tmp/dashboards_out" || stale=1; \
	if (( stale )); then echo "rules/: generated files are stale: run make rules" >&2; exit 1; fi; \
	echo "rules/: generated files up to date"
	@if ! $(JSONNETFMT) --test $(RULES_SRC); then echo "rules/: jsonnet not formatted: run make rules-fmt" >&2; exit 1; fi
	promtool check rules rules/prometheus_alerts.yaml rules/prometheus_rules.yaml
	cd rules/tests && promtool test rules *.yaml

HELM_VERSION = $(shell sed -nE 's/^(require)?[[:space:]]*helm\.sh\/helm\/v3 (v[^ ]+).*/\2/p' test/tools/helm/go.mod | head -1)
HELM        ?= $(or $(HERD_HELM_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/herd/bin)/helm-$(HELM_VERSION)
CHART       := manifests/charts/herd
# The mixin's generated files the chart ships (Helm reads only files inside the chart).
CHART_FILES := rules/prometheus_alerts.yaml:$(CHART)/files/prometheus_alerts.yaml \
               rules/prometheus_rules.yaml:$(CHART)/files/prometheus_rules.yaml \
               rules/dashboards_out/herd.json:$(CHART)/files/herd.json

.PHONY: helm
helm: ## Build Helm from Go modules (pinned in test/tools/helm), cached outside the work tree.
	bash test/tools/helm/build.sh

.PHONY: chart-sync
chart-sync: ## Copy the mixin's generated rules and dashboard into the chart (run after make rules).
	@for pair in $(CHART_FILES); do cp "$${pair%%:*}" "$${pair##*:}"; echo "$${pair%%:*} -> $${pair##*:}"; done

.PHONY: chart-check
chart-check: helm ## Chart copies of the mixin up to date; helm lint --strict and helm template (default and all-on values).
	@stale=0; for pair in $(CHART_FILES); do cmp -s "$${pair%%:*}" "$${pair##*:}" || { echo "$${pair##*:} differs from $${pair%%:*}" >&2; stale=1; }; done; \
	if (( stale )); then echo "$(CHART)/files: stale copies: run make chart-sync" >&2; exit 1; fi
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/all-on-values.yaml
	$(HELM) template herd $(CHART) --namespace herd --kube-version 1.36.3 >/dev/null
	$(HELM) template herd $(CHART) --namespace herd --kube-version 1.36.3 -f $(CHART)/ci/all-on-values.yaml >/dev/null

.PHONY: chart-test
chart-test: deps controlplane chart-check ## chart-check, then the chart's tests on a real apiserver (test/chart; make test runs them with ./...).
	HERD_HELM=$(HELM) $(GO) test -race -count=1 -timeout 10m ./test/chart/

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME (default 60s) each.
	@for pkg in $$($(GO) list ./...); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=10s $$pkg; \
	  done; \
	done

.PHONY: bench
bench: ## Hot-path benchmarks against their baselines (figures go to docs/performance.md).
	$(GO) test -run='^$$' -bench=. -benchmem -cpu=1 -count=3 ./exporter/...

.PHONY: load
load: build ## HTTP ingest load test: 15,000 instances, 4 posters, against a read-only baseline (SPEC §7).
	$(GO) run ./test/load -herd bin/herd

.PHONY: responder-load
responder-load: build ## Responder alert to action on the real stack: 200 stale nodes, alerts to POST /alerts (SPEC §7; needs make controlplane, make deps).
	$(GO) run ./test/responderload -herd bin/herd

.PHONY: scale
scale: controlplane ## 5,000 real Nodes + 15,000 instances against the herd binary: RSS, heap, scrape.
	$(GO) run ./test/scale -nodes 5000

.PHONY: hollow-measure
hollow-measure: controlplane ## RSS and CPU per hollow node (real kubelet + kube-proxy) at 5 and 20 nodes in steady state (HOLLOW_FLAGS="-nodes 5,20,50").
	$(GO) run ./test/hollow/measure $(HOLLOW_FLAGS)

.PHONY: drill-agents
drill-agents: deps controlplane ## Real-agent drills, minutes each: etcd restored with and without --bump-revision (incident 000), pod churn; 20 hollow nodes (HERD_AGENT_NODES=n).
	HERD_AGENT_DRILLS=1 $(GO) test -count=1 -timeout 60m -v -run '^(TestEtcdRestore|TestPodChurn)$$' ./test/hollow/

.PHONY: fixtures
fixtures: controlplane ## Re-record testdata/audit from the real control plane.
	$(GO) run ./test/fixtures -out testdata/audit

.PHONY: demo
demo: deps controlplane build ## herd end to end on a local control plane with 50 hollow nodes (real kubelets and kube-proxies; root): a relist storm, the isolation, its undoing (DEMO_EXIT=1: exit after the summary).
	$(GO) run ./test/demo -herd bin/herd

.PHONY: drill-storm
drill-storm: deps controlplane build ## The storm drill (incident 002): 2,000 heavy pods, 100 storming cilium-agents, herd acting vs dry-run, side by side.
	$(GO) run ./test/drill/storm -herd bin/herd $(DRILL_FLAGS)

.PHONY: drill-production
drill-production: deps controlplane build ## The storm drill with production settings (issue 12): forecast and guard before the storm, rolling restart, unforecast and kubelet storms; about 75 minutes.
	$(GO) run ./test/drill/storm -herd bin/herd -settings production $(DRILL_FLAGS)

.PHONY: clean
clean:
	rm -rf bin/

.PHONY: help
help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'
