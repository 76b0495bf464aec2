PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := streamlib binders/kafka/streamlib_kafka binders/rabbit/streamlib_rabbit

# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-m 'not interop'"`.
PYTEST_ARGS ?=

.PHONY: install test-tools demo lint typecheck test test-unit brokers brokers-down cluster cluster-down bench chaos clean

$(STAMP): pyproject.toml binders/kafka/pyproject.toml binders/rabbit/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' -e binders/kafka -e binders/rabbit
	touch $(STAMP)

# The AsyncAPI parser and Chromium check `streamlib docs` in the tests.
NPM_CACHE ?= $(HOME)/.cache/streamlib/npm
ASYNCAPI_PARSER := $(NPM_CACHE)/node_modules/@asyncapi/parser/package.json

$(ASYNCAPI_PARSER):
	npm install -q --prefix $(NPM_CACHE) --no-audit --no-fund '@asyncapi/parser@3'

install: $(STAMP)

# Only the tests need these, not the demo.
test-tools: $(ASYNCAPI_PARSER)
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

demo: install
	$(BIN)/python examples/quickstart/app.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy $(PACKAGES) tests/typing examples

test-unit: install test-tools
	$(BIN)/pytest tests/unit tests/typing

# Starts Kafka and RabbitMQ with the launcher unless STREAMLIB_TEST_KAFKA/_RABBIT are set,
# runs every test, and stops what it started, also when tests fail.
test: install test-tools lint typecheck
	bash tools/with-brokers.sh $(BIN)/pytest $(PYTEST_ARGS)

brokers:
	$(PYTHON) tools/brokers.py up

brokers-down:
	$(PYTHON) tools/brokers.py down

# Three-node Kafka and RabbitMQ clusters for the failover tests (tests/cluster start them on
# their own when they are down, and stop them afterwards).
cluster:
	$(PYTHON) tools/cluster.py up

cluster-down:
	$(PYTHON) tools/cluster.py down

bench: install
	$(BIN)/pip install -q -r bench/requirements.txt
	bash tools/with-brokers.sh $(BIN)/python -m bench

# The chaos run restarts brokers, so it gets a broker pair of its own (never the shared one on
# 9092/5672), started here and stopped afterwards. Extra options: CHAOS_ARGS="--messages 5000".
CHAOS_BROKERS := STREAMLIB_BROKERS_DIR=/tmp/streamlib-chaos-brokers \
	STREAMLIB_KAFKA_PORT=29092 STREAMLIB_KAFKA_CONTROLLER_PORT=29093 STREAMLIB_KAFKA_PROXY_PORT=29192 \
	STREAMLIB_RABBIT_PORT=5772 STREAMLIB_RABBIT_DIST_PORT=25772 \
	STREAMLIB_RABBIT_NODE=streamlib-chaos@localhost STREAMLIB_POSTGRES_PORT=5533
CHAOS_ARGS ?=

chaos: install
	env -u STREAMLIB_TEST_KAFKA -u STREAMLIB_TEST_RABBIT -u STREAMLIB_TEST_POSTGRES $(CHAOS_BROKERS) \
		bash tools/with-brokers.sh $(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache *.egg-info
