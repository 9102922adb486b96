# Two entry points (see README): `make demo` and `make test`. Both run as root.
VENV := .venv/bin
.PHONY: setup build demo test lint bench clean

setup:
	bash scripts/setup.sh

build: setup
	$(VENV)/python -m plugin.build

# The main job on the local default: a 3-node netns lab, the scenario suites, then down.
demo: build
	$(VENV)/lab up -c examples/netns-hostgw.toml
	$(VENV)/pytest scenarios/ --lab-config examples/netns-hostgw.toml; rc=$$?; \
	  $(VENV)/lab down -c examples/netns-hostgw.toml; exit $$rc

# Everything this machine can run: unit + integration tests (root, vm, slow), scenarios included.
test: build lint
	bash scripts/test.sh

lint: setup
	$(VENV)/ruff check .
	$(VENV)/mypy -p lab -p plugin -p bench

bench: build
	$(VENV)/python -m bench

clean:
	rm -rf dist build .venv
