# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO ?= demo
DEMO_SET ?= --set pseudo_epochs=64
ROUNDS ?= 1
REAL_BACKGROUNDS := ../shared/rfcx/backgrounds

.PHONY: setup browser demo lint test clean gpu-wheels

# torch and torchvision are pinned here, not in pyproject.toml (which takes any torch >= 2.4): the tested pair
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# The venv takes about 7.2 GB (torch's CUDA build with its NVIDIA libraries and triton, 5.3 GB; DALI with its codecs, 1 GB):
# with less free space pip stops half-way ("No space left on device", as CI once did), so say so first
VENV_KB := 7600000
$(BIN)/rfcx: pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print $$4}'); [ "$${free:-0}" -ge $(VENV_KB) ] || \
	  echo "warning: $$((free / 1024)) MB free here; .venv needs about $$(($(VENV_KB) / 1024)) MB (torch's CUDA build, DALI)" >&2
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[test,bench]' $(TORCH_PINS)
	touch $@

setup: $(BIN)/rfcx

# The main job on bundled default (synthetic) data: synthesise 80 train + 30 test clips of 60 s (a skewed species
# mix, about one labelled call per labelled recording, real rainforest backgrounds where ../shared has them), build
# the feature store, train the oracle (the ceiling: the same config on every call's truth) and rounds 0..$(ROUNDS)
# with the `cpu` config on 2 folds, its students and oracle at 64 epochs instead of 96 ($(DEMO_SET); at 32, session
# 26, round 1 fell below round 0, 0.640 vs 0.695, at 64 0.702; see the README; `make demo DEMO_SET=` trains the
# config as it is), infer the
# test set with the round `rfcx infer` picks (the run's best round) and print its LWLRAP, then every round beside
# random, prior-only and the oracle (`rfcx report`), and write the review page. Re-running skips what is done.
demo: setup
	$(BIN)/rfcx synth $(DEMO)/data --train 80 --test 30 --seed 0 --tp-per-clip 1.0 --fp-per-clip 2.0 --tp-balance 0 \
	  --workers 2 $$( [ -d $(REAL_BACKGROUNDS) ] && echo --background $(REAL_BACKGROUNDS) )
	$(BIN)/rfcx build-store --data $(DEMO)/data --store $(DEMO)/features.zarr
	$(BIN)/rfcx train --oracle --store $(DEMO)/features.zarr --runs $(DEMO)/runs --config cpu --folds 2 $(DEMO_SET)
	$(BIN)/rfcx train --round $(ROUNDS) --store $(DEMO)/features.zarr --runs $(DEMO)/runs --config cpu --folds 2 $(DEMO_SET)
	$(BIN)/rfcx infer --batch --store $(DEMO)/features.zarr --runs $(DEMO)/runs \
	  --out $(DEMO)/submission.csv --detections $(DEMO)/detections.csv
	@echo "== test-set LWLRAP of the round rfcx infer picked (exact windows; rfcx evaluate) =="
	@$(BIN)/rfcx evaluate --pred $(DEMO)/submission.csv --truth $(DEMO)/data/test_labels.csv \
	  --train-tp $(DEMO)/data/train_tp.csv | head -1
	@echo "== every round beside the yardsticks (rfcx report; the rounds' own fcn scoring) =="
	@$(BIN)/rfcx report --runs $(DEMO)/runs
	@echo "== the review page of round $(ROUNDS) (rfcx review; open $(DEMO)/review/index.html) =="
	@$(BIN)/rfcx review --runs $(DEMO)/runs --store $(DEMO)/features.zarr --data $(DEMO)/data --round $(ROUNDS) \
	  --detections $(DEMO)/detections.csv --out $(DEMO)/review --no-progress

# Debian's chromium, for the review page's test in a real browser (tests/test_review.py skips without it): installed
# where it is missing and apt-get can run (as root, or with sudo that needs no password); never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the review page's browser test"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && \
	      $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; \
	  fi; \
	  command -v chromium >/dev/null 2>&1 || \
	    echo "note: no chromium (apt-get install chromium): the review page's browser test will be skipped"; \
	  true; }

# ruff (lint, and the format check), mypy, and import-linter's layer contracts (pyproject.toml): all must be clean
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup browser lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(DEMO) .pytest_cache

# The wheels `bash benchmarks/gpu_check.sh` installs on a GPU machine without network (Python 3.12): into .whl/
gpu-wheels:
	bash benchmarks/gpu_check_wheels.sh .whl
