# The two commands the README starts with. Both build their own virtual environment.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app worker distill distillery
	$(BIN)/pytest

# The API and one worker in the foreground (migrates first). Embedded mode by default: SQLite, a filesystem
# broker and ./var; set DISTILLERY_DATABASE_URL / DISTILLERY_BROKER_URL for Postgres / Redis. Ctrl-C stops both.
run: $(STAMP)
	$(BIN)/python -m worker.launch

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var
