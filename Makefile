.PHONY: setup run test lint bench lock

setup:
	@scripts/setup.sh

run: setup
	@for image in ubuntu ghcr.io/acme/app:1 ghcr.io/acmeevil/app quay.io/org/tool; do \
	  .venv/bin/regward check $$image --policy examples/policy.yaml; echo; done; true

test: setup
	.venv/bin/pytest

lint: setup
	.venv/bin/ruff check regward tests bench
	.venv/bin/ruff format --check regward tests bench
	.venv/bin/mypy

bench: setup
	@for script in bench/*.py; do echo "== $$script"; .venv/bin/python $$script || exit 1; done

# Regenerate requirements.lock from the ranges in pyproject.toml.
lock:
	.venv/bin/pip install -q uv
	.venv/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock
