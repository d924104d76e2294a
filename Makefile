# The whole set-up on a fresh machine: `make demo` or `make test`. Nothing else is installed by hand.
PYTHON ?= python3
VENV ?= .venv
# timm (the encoders) needs torchvision, and on the machines this project is built on torchvision
# only imports beside torch 2.14.1 (a CUDA build of ~5.5 GB from the local package cache, which
# runs on the CPU as well); torch==2.13.0, the CPU-only build, has no torchvision there. A looser
# spec than this pulls gigabytes from the internet; set TORCH_SPEC to choose another build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PIP := $(PY) -m pip

.PHONY: demo test venv clean-demo browser

# A torch and torchvision already importable by $(PYTHON) (say, a user's CUDA build) are kept:
# the venv sees them.
$(VENV)/.created:
	@if $(PYTHON) -c "import torch, torchvision" 2>/dev/null; then \
		echo "Using the torch and torchvision already installed for $(PYTHON)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	@$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) install -q $(TORCH_SPEC)
	touch $@

$(VENV)/.installed-%: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[$*]"
	touch $@

venv: $(VENV)/.installed-test

# The browser tests of `segkit app` drive Debian's chromium through chromedriver: installed here
# when missing and running as root (CI); elsewhere those tests are skipped with the reason.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing chromium and chromium-driver for the browser tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "No chromedriver and not root: the browser tests will be skipped"; \
		fi; \
	fi

test: $(VENV)/.installed-test browser
	$(PY) -m pytest -q

# The whole pipeline on a small synthetic polyp dataset with injected defects (~5 min on 2 CPU cores).
demo: $(VENV)/.installed-test
	$(BIN)/segprep synth $(DEMO_DIR)/raw --layout kvasir-seg --n 80 --size 128x128 --noise 0.15 --seed 0 --force
	$(BIN)/segprep ingest $(DEMO_DIR)/raw -o $(DEMO_DIR)/work
	$(BIN)/segprep clean $(DEMO_DIR)/work/manifests/ingest.csv --strict
	$(BIN)/segprep augment $(DEMO_DIR)/work/manifests/clean.csv --factor 5 --size 128 --preview 4
	$(BIN)/segtrain run $(DEMO_DIR)/work/manifests/augment.csv --model unet --loss bce+dice \
		--base-channels 16 --epochs 4 --batch-size 8 --out $(DEMO_DIR)/runs/unet
	$(BIN)/segtrain bench $(DEMO_DIR)/work/manifests/augment.csv --models unet,sa-unet \
		--losses bce,dice --base-channels 8 --epochs 2 --out $(DEMO_DIR)/runs/bench
	@echo
	@echo "demo outputs:"
	@echo "  synthetic dataset + truth   $(DEMO_DIR)/raw/  ($(DEMO_DIR)/raw/synth_truth.csv)"
	@echo "  manifests                   $(DEMO_DIR)/work/manifests/{ingest,clean,augment}.csv"
	@echo "  clean report                $(DEMO_DIR)/work/reports/clean/index.html"
	@echo "  augmentation preview        $(DEMO_DIR)/work/reports/augment/preview.png"
	@echo "  training run                $(DEMO_DIR)/runs/unet/ (summary.json, curves.png, predictions.png)"
	@echo "  leaderboard                 $(DEMO_DIR)/runs/bench/leaderboard.md"
	@echo
	@echo "review the masks and try the model in a browser:"
	@echo "  $(BIN)/segkit app $(DEMO_DIR)/work --runs $(DEMO_DIR)/runs"

clean-demo:
	rm -rf "$(DEMO_DIR)"
