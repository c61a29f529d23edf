# ActorQ: `make run` installs and trains int8 CartPole; `make test` installs and checks everything.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A new directory per run: a run directory is never reused or deleted (--resume continues one).
RUN_DIR ?= runs/cartpole-dqn-int8-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install run test lint typecheck pytest proto clean check-redis compose-check

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
# Bytecode for the project's own modules, as pip writes it for installed packages: every
# process of a run imports them at once, and without it each compiles them itself.
	$(BIN)/python -m compileall -q actorq services commands
	@touch $(STAMP)

run: install
	$(BIN)/actorq train --env CartPole-v1 --algo dqn --precision int8 --actors 2 \
		--target-return 475 --sustain 3 --max-env-steps 150000 --seed 0 --out $(RUN_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy actorq services commands

pytest: install
	$(BIN)/pytest -q --durations=15  # the slowest tests, to keep the suite under 20 minutes

test: check-redis lint typecheck pytest

# The replay's Redis tests start their own redis-server (never the machine's 6379).
check-redis:
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found on PATH: the replay's Redis tests start a real one. Install it: sudo apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS)"; exit 1; }

# The compose stack for real (not part of `make test`: it needs Docker and docker compose or
# docker-compose, e.g. ../shared/tools/local-docker.sh): builds the images, brings the stack
# up, scales and kills containers, checks the run and that nothing acknowledged was lost,
# prints a table, removes its containers, networks and volumes. See deploy/compose_check.py.
compose-check: install
	$(BIN)/python deploy/compose_check.py

# Regenerate the checked-in protobuf/gRPC code (tests/test_proto.py checks it is current).
proto: install
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/actorq/v1/*.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
