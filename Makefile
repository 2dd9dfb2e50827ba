# The two commands of the README. Each creates .venv first when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv docs clean

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/astro-neuron demo

test: venv
	$(PY) -m pytest

# API reference from the docstrings (pdoc), written to docs/api/ (not tracked)
docs: venv
	$(PY) scripts/build_api_docs.py docs/api
	@echo "open docs/api/index.html"

clean:
	rm -rf $(VENV) build *.egg-info
