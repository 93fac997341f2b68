.PHONY: setup run test test-fast lint bench lock stress-reload dist fuzz soak

setup:
	@scripts/setup.sh

# The policy server on SQLite in ./var (REGWARD_DATA_DIR), initialised the first time with the
# organization `demo` and its owner `admin`; prints the address and the owner's password.
PORT ?= 8080
run: setup
	@.venv/bin/regward server init --org demo --owner admin
	@.venv/bin/regward server run --host 127.0.0.1 --port $(PORT)

# The test files shared out over two processes (`--dist loadfile`: a file's tests, and the
# real parts its fixtures start, stay in one process); `.venv/bin/pytest FILE` runs one alone.
test: setup
	.venv/bin/pytest -n 2 --dist loadfile

# Quick loops: every test that needs neither root (dockerd, network namespaces, PostgreSQL) nor a
# browser.
test-fast: setup
	.venv/bin/pytest -m "not e2e and not postgres and not browser"

# Issue 10 item 5 at length: 60 policy reloads while 100 clients use the proxy (a few minutes).
stress-reload: setup
	REGWARD_RELOAD_STRESS=60 .venv/bin/pytest tests/agent/test_proxy_reload.py -q

# Issue 13 at length: the API fuzzer with 300 examples per route and caller (`make test` runs 5).
fuzz: setup
	REGWARD_FUZZ_EXAMPLES=300 .venv/bin/pytest tests/server/test_fuzz.py -q -s --timeout 3600

lint: setup
	.venv/bin/ruff check regward tests bench
	.venv/bin/ruff format --check regward tests bench
	.venv/bin/mypy

# Every benchmark but the soak, which has its own target.
bench: setup
	@for script in bench/*.py; do [ $$script = bench/soak.py ] && continue; \
		echo "== $$script"; .venv/bin/python $$script || exit 1; done

# Issue 13's soak: 500 simulated agents on one server for 10 minutes (SOAK_ARGS to change it,
# e.g. SOAK_ARGS="--agents 100 --seconds 120"); `make test` runs it for a few seconds.
SOAK_ARGS ?=
soak: setup
	.venv/bin/python bench/soak.py $(SOAK_ARGS)

# The wheel and the sdist in dist/ (templates, static files and migrations included).
dist: setup
	.venv/bin/python -m build --installer uv --outdir dist .

# Regenerate requirements.lock from the ranges in pyproject.toml.
lock:
	.venv/bin/pip install -q uv
	.venv/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 -o requirements.lock
