# The two commands of the README: `make run` (the main job) and `make test`.
.PHONY: run test lint setup
VENV := .venv/.ready

$(VENV): pyproject.toml scripts/setup
	./scripts/setup

setup: $(VENV)

run: $(VENV)
	.venv/bin/python -m trainer.run

lint: $(VENV)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: lint
	.venv/bin/python -m pytest -q
