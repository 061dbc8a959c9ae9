# The two commands a newcomer needs:
#   make run    set up, export a model repository, start the embedded Triton server and score the example audio
#   make test   set up, lint (ruff) and run the whole test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done

.PHONY: setup lint test run web bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh examples/node/package-lock.json
	scripts/setup.sh
	touch $(STAMP)

# the lint gate: ruff's rules and formatting, configured in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest tests --durations=15

run: setup
	$(PY) scripts/run.py

# the embedded server on the model `make run` uses, and the web page at http://127.0.0.1:7860/
web: setup
	$(PY) scripts/run.py web

# benchmark against FunASR (tables, bench_results/bench.json and bench.png), then Triton's perf_analyzer sweep
bench: setup
	$(PY) scripts/bench.py
	$(PY) scripts/load_test.py

clean:
	rm -rf $(VENV) .cache outputs
