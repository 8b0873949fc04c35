# `make test` and `make demo` each set up their own virtual environment first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lint-tools test test-fast lint-infra demo bench aws-acceptance clean

$(STAMP): pyproject.toml inference_code/requirements.lock
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU machines here carry this build on local disk.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	# The serving lock's pins are constraints: the tests run the onnxruntime, Pillow, numpy and uvicorn the
	# serving image installs (tests/infra/test_supply_chain.py), whatever the registry released since.
	sed -e '/--hash=/d' -e 's/ *\\$$//' inference_code/requirements.lock > $(VENV)/serving-constraints.txt
	$(BIN)/pip install --quiet --constraint $(VENV)/serving-constraints.txt -e '.[build,aws,test]'
	touch $@

install: $(STAMP)

# checkov pins boto3 1.35, which sagemaker 2.257 refuses: it lives in its own environment.
CHECKOV_STAMP := .venv-checkov/.installed
$(CHECKOV_STAMP):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet 'checkov>=3.2,<4'
	touch $@

lint-tools: $(CHECKOV_STAMP)

lint-infra: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest -q tests/infra $(PYTEST_ARGS)

test: $(STAMP) $(CHECKOV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The stages, the URLs and the results only; DEMO_ARGS=--verbose adds the libraries' warnings and logs,
# DEMO_ARGS=--exit-when-ready stops after the example requests.
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/clip-api local up --approve $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/clip-api bench

# The real-account acceptance run (README, "Deploy to AWS"): deploys, builds, promotes, serves, tears down.
aws-acceptance: $(STAMP)
	CLIP_API_AWS_TESTS=1 $(BIN)/python -m pytest -m aws -s tests/aws $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-* .artifacts .pytest_cache
