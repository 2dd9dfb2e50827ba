# The two commands of the README. Each creates .venv first when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test venv bench clean

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/astro-neuron demo

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
