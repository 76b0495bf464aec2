PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := streamlib binders/kafka/streamlib_kafka binders/rabbit/streamlib_rabbit

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not interop'"`.
PYTEST_ARGS ?=

.PHONY: install demo lint typecheck test test-unit brokers brokers-down bench clean

$(STAMP): pyproject.toml binders/kafka/pyproject.toml binders/rabbit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e binders/kafka -e binders/rabbit
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python examples/quickstart/app.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy $(PACKAGES) tests/typing examples

test-unit: install
	$(BIN)/pytest tests/unit tests/typing

# Starts Kafka and RabbitMQ with the launcher unless STREAMLIB_TEST_KAFKA/_RABBIT are set,
# runs every test, and stops what it started, also when tests fail.
test: install lint typecheck
	bash tools/with-brokers.sh $(BIN)/pytest $(PYTEST_ARGS)

brokers:
	$(PYTHON) tools/brokers.py up

brokers-down:
	$(PYTHON) tools/brokers.py down

bench: install
	$(BIN)/pip install -q -r bench/requirements.txt
	bash tools/with-brokers.sh $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache *.egg-info
