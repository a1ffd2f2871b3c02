# Every task of the project. A fresh machine needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
BENCHSTAMP := $(VENV)/.installed-bench

.PHONY: help install demo test test-fast lint format bench bench-quick image image-test lock kube-up test-kind test-kube-containers clean

help:
	@echo "make demo   - install and run examples/montecarlo.yaml on a local Dask cluster"
	@echo "make test   - install test extras and run the whole suite (what CI runs)"
	@echo "make bench  - every contender side by side on workloads W1-W8 (bench/README.md; ~15 min)"
	@echo "make bench-quick - the same at small N, about a minute"
	@echo "make image  - build the runner image with docker or podman (PYTHON_IMAGE=... for another base)"
	@echo "make image-test - build it and run it as the pods do (podman; part of make test when installed)"
	@echo "make lock   - regenerate image-requirements.txt from pyproject.toml"
	@echo "make lint | format | kube-up | test-kind | clean"
	@echo "make test-kube-containers - build the image and run the kube e2e suite with every pod a podman"
	@echo "    container of it (SWEEP_TEST_POD_RUNTIME=podman; make test runs pods as processes)"
	@echo "make test-kind - the kube e2e tests (pytest -m kube) on a real cluster such as kind; set"
	@echo "    SWEEP_TEST_KUBECONFIG  the cluster's kubeconfig (the Dask operator installed in it)"
	@echo "    SWEEP_TEST_IMAGE       the sweep-runner image the cluster can run (kind load docker-image)"
	@echo "    SWEEP_TEST_S3_HOST     this machine's address as seen from pods (kind: the kind network's gateway)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[plot]'
	touch $@

$(TESTSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(STAMP)

$(BENCHSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@ $(TESTSTAMP) $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sweep run examples/montecarlo.yaml
	$(BIN)/sweep results demo-output/montecarlo --plot demo-output/montecarlo.png
	$(BIN)/sweep report demo-output/montecarlo -o demo-output/montecarlo.html

# checkov (tests/test_chart.py) pins botocore and packaging below what s3fs needs: its own venv
CHECKOV := .venv-tools/checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-tools/checkov
	.venv-tools/checkov/bin/pip install -q "checkov==3.3.30"

# the HTML report's test opens it in a real headless browser: Debian's chromium
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

test: $(TESTSTAMP) $(CHECKOV) $(CHROMIUM)
	$(BIN)/ruff check runner tests examples bench
	SWEEP_TEST_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q

test-fast: $(TESTSTAMP)
	$(BIN)/python -m pytest -q -m "not slow and not kube"

lint: $(TESTSTAMP)
	$(BIN)/ruff check runner tests examples bench
	$(BIN)/ruff format --check runner tests examples bench

format: $(TESTSTAMP)
	$(BIN)/ruff format runner tests examples bench
	$(BIN)/ruff check --fix runner tests examples bench

bench: $(BENCHSTAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.results_scale
	$(BIN)/python -m bench.cache_cost

bench-quick: $(BENCHSTAMP)
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.results_scale --items 1e6 --repeat 1 --results /tmp/results_scale.json
	$(BIN)/python -m bench.cache_cost --items 1e5 --repeat 1 --results /tmp/cache_cost.json

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

# docker when its engine answers, else podman (daemonless: Debian's package works as root)
ENGINE ?= $(shell if docker info >/dev/null 2>&1; then echo docker; elif command -v podman >/dev/null 2>&1; then echo podman; fi)
PYTHON_IMAGE ?= python:3.11-slim
IMAGE ?= sweep-runner:$(VERSION)

image:
	@test -n "$(ENGINE)" || { echo "make image: no container engine: install docker, or podman (apt-get install podman)" >&2; exit 2; }
	$(ENGINE) build --network host --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t $(IMAGE) -t sweep-runner:latest .

# the image as users run it (tests/image): built on a Debian-made base when no registry answers
image-test: $(TESTSTAMP)
	$(BIN)/python -m pytest -q -m image tests/image

# image-requirements.txt: the image's pinned dependencies, from pyproject.toml
lock: | $(BIN)/python
	$(BIN)/python -m pip install -q "uv>=0.4"
	$(BIN)/uv pip compile pyproject.toml --extra kubernetes --universal --python-version 3.11 \
	  --native-tls -q -o image-requirements.txt --custom-compile-command "make lock"

kube-up: $(TESTSTAMP)
	$(BIN)/python -m tests.kube.cluster

test-kind: $(TESTSTAMP)
	@test -n "$$SWEEP_TEST_KUBECONFIG" || { echo "set SWEEP_TEST_KUBECONFIG to a kind cluster's kubeconfig"; exit 2; }
	@test -n "$$SWEEP_TEST_IMAGE" || { echo "set SWEEP_TEST_IMAGE to the sweep-runner image loaded into the cluster (e.g. sweep-runner:ci, see make help)"; exit 2; }
	$(BIN)/python -m pytest -q -m kube

# the kube e2e suite with pods as containers of the real image (tests/kube/README.md);
# the `image` fixture builds it as image-test does
test-kube-containers: $(TESTSTAMP)
	SWEEP_TEST_POD_RUNTIME=podman $(BIN)/python -m pytest -q tests/kube/test_containers.py \
	  tests/kube/test_e2e.py tests/kube/test_failures.py

clean:
	rm -rf .venv-tools
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache build *.egg-info
