# The whole set-up on a fresh machine: `make demo` or `make test`. Nothing else is installed by hand.
PYTHON ?= python3
VENV ?= .venv
# A looser spec than this pulls gigabytes of CUDA wheels; set TORCH_SPEC to choose another build.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= demo
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test venv clean-demo

# A torch already importable by $(PYTHON) (say, a user's CUDA build) is kept: the venv sees it.
$(VENV)/.created:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "Using the torch already installed for $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-%: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[$*]"
	touch $@

venv: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

demo: $(VENV)/.installed-test
	bash benchmarks/demo.sh "$(DEMO_DIR)" "$(VENV)"

clean-demo:
	rm -rf "$(DEMO_DIR)"
