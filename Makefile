# The README's two commands: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The example images hold only classes the default model never saw in training.
DEMO_LABELS := tiger face,bus,violin,pear,castle,duck,other
INSTANCE_LABELS := tiger face,bus,violin,pear,castle,duck

demo: $(STAMP)
	$(BIN)/zeroseg segment examples/images --labels "$(DEMO_LABELS)" --out demo_out
	@echo "overlays (image + colours + legend): demo_out/*_overlay.png"
	$(BIN)/zeroseg instances examples/images --labels "$(INSTANCE_LABELS)" --out demo_out/instances
	@echo "instances (masks, boxes, labels; COCO JSON): demo_out/instances/"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lseg.py
	$(BIN)/python benchmarks/bench_spectral.py

clean:
	rm -rf $(VENV) build dist *.egg-info
