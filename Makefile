# Two entry points (see README): `make demo` and `make test`. Both run as root.
VENV := .venv/bin
.PHONY: setup build demo test lint bench clean

# One demo lab per checkout: two people's `make demo` on one machine never share (and delete)
# one lab; the same checkout finds its own again.
DEMO_NAME := d$(shell pwd | sha256sum | cut -c1-8)
DEMO_CONFIG := examples/netns-hostgw.toml

setup:
	bash scripts/setup.sh

build: setup
	$(VENV)/python -m plugin.build

# The main job on the local default: a 3-node netns lab, the scenario suites, then down.
# It installs only what a netns lab needs.
demo:
	bash scripts/setup.sh netns
	$(VENV)/python -m plugin.build
	$(VENV)/lab up -c $(DEMO_CONFIG) --name $(DEMO_NAME)
	$(VENV)/pytest scenarios/ --lab-config $(DEMO_CONFIG) --lab-name $(DEMO_NAME); rc=$$?; \
	  $(VENV)/lab down -c $(DEMO_CONFIG) --name $(DEMO_NAME); exit $$rc

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
