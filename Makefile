# wsfleet: the two commands are `make lab` and `make test`; the rest are parts of them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup test lint molecule lab lab-down bench bench-lab image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install what everything else needs (quick no-op when done)
	@scripts/with-engine.sh scripts/setup.sh

test: ## everything CI runs: lint, syntax, fast tests, every Molecule scenario
	@scripts/with-engine.sh bash -c 'scripts/setup.sh && scripts/test.sh'

lint: ## lints only (yamllint, ansible-lint, ruff, mypy)
	@scripts/setup.sh host && scripts/test.sh lint

molecule: ## one scenario: make molecule S=os_tuning
	@test -n "$(S)" || { echo "usage: make molecule S=<scenario>"; exit 2; }
	@scripts/with-engine.sh bash -c 'scripts/setup.sh && scripts/molecule.sh test -s "$(S)"'

lab: ## the whole stack in local containers (SSH, sudo), deployed and smoke-checked
	@scripts/lab.sh up

lab-down: ## remove the lab (containers, networks, cached facts)
	@scripts/lab.sh down

bench: ## load benchmarks on loopback against peers; appends to BENCHMARKS.md
	@scripts/setup.sh host && scripts/bench.sh

bench-lab: ## connect and fanout through the lab's load balancer beside loopback; appends to BENCHMARKS.md
	@scripts/setup.sh host && scripts/bench-lab.sh --report BENCHMARKS.md

image: ## the server's OCI image localhost/wsfleet/server from the local Debian base
	@scripts/with-engine.sh bash -c 'scripts/setup.sh && scripts/image.sh'
