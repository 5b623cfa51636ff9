# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO ?= demo

.PHONY: setup demo test clean

$(BIN)/rfcx: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(BIN)/rfcx

# The main job on bundled default (synthetic) data: synthesise, build the feature store, describe it.
demo: setup
	$(BIN)/rfcx synth $(DEMO)/data --train 100 --test 40 --seed 0 \
	  $$( [ -f ../shared/rfcx/f97ababc1.flac ] && echo --background ../shared/rfcx/f97ababc1.flac )
	$(BIN)/rfcx build-store --data $(DEMO)/data --store $(DEMO)/features.zarr

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO) .pytest_cache
