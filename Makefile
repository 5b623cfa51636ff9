# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO ?= demo
ROUNDS ?= 2
REAL_BACKGROUND := ../shared/rfcx/f97ababc1.flac

.PHONY: setup demo test clean gpu-wheels

# torch and torchvision are pinned here, not in pyproject.toml (which takes any torch >= 2.4): the tested pair
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

$(BIN)/rfcx: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[test,bench]' $(TORCH_PINS)
	touch $@

setup: $(BIN)/rfcx

# The main job on bundled default (synthetic) data: synthesise 100 train + 40 test clips of 60 s, build the
# feature store, train rounds 0..$(ROUNDS) with the `cpu` config, then infer the test set with each round's
# ensemble and print its LWLRAP. Re-running skips what is done.
demo: setup
	$(BIN)/rfcx synth $(DEMO)/data --train 100 --test 40 --seed 0 --tp-fraction 1.0 --label-density 6 --workers 2 \
	  $$( [ -f $(REAL_BACKGROUND) ] && echo --background $(REAL_BACKGROUND) )
	$(BIN)/rfcx build-store --data $(DEMO)/data --store $(DEMO)/features.zarr
	$(BIN)/rfcx train --round $(ROUNDS) --store $(DEMO)/features.zarr --runs $(DEMO)/runs --config cpu
	@for k in $$(seq 0 $(ROUNDS)); do \
	  $(BIN)/rfcx infer --batch --store $(DEMO)/features.zarr --runs $(DEMO)/runs --round $$k \
	    --out $(DEMO)/submission_round$$k.csv --detections $(DEMO)/detections_round$$k.csv || exit 1; \
	done
	@echo "== test-set LWLRAP of each round's ensemble (rfcx infer --batch + rfcx evaluate) =="
	@for k in $$(seq 0 $(ROUNDS)); do \
	  printf 'round %s: ' $$k; \
	  $(BIN)/rfcx evaluate --pred $(DEMO)/submission_round$$k.csv --truth $(DEMO)/data/test_labels.csv | head -1; \
	done

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(DEMO) .pytest_cache

# The wheels `bash benchmarks/gpu_check.sh` installs on a GPU machine without network (Python 3.12): into .whl/
gpu-wheels:
	bash benchmarks/gpu_check_wheels.sh .whl
