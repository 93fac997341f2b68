"""The wheel and the sdist: `python -m build` makes both, they carry the templates, static files
and migrations, and the wheel installed into a fresh virtual environment runs: the agent alone,
and the server with the `server` extra (init, run, answer a request).

The fresh environments are made by `python -m venv --without-pip`; the installs go through uv
(`uv pip install`), which reads the same wheel metadata as pip in seconds instead of minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from regward import __version__
from tests.harness.server import free_port
from tests.harness.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "packaged passphrase"  # noqa: S105 - the test owner's
STDIN = ("--password-stdin",)


def _package_data() -> set[str]:
    """Every file of the package that is not Python: what a wheel without them would lack."""
    package = ROOT / "regward"
    return {
        str(path.relative_to(ROOT))
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    } | {
        str(path.relative_to(ROOT))
        for path in (package / "server" / "migrations").rglob("*.py")
        if "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    return out


def _wheel(dist: Path) -> Path:
    return dist / f"regward-{__version__}-py3-none-any.whl"


def test_wheel_and_sdist_carry_templates_static_files_and_migrations(dist: Path) -> None:
    wanted = _package_data()
    assert any("/templates/" in name for name in wanted)
    assert any("/static/" in name for name in wanted)
    assert any("/migrations/versions/" in name for name in wanted)
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        assert wanted <= set(wheel.namelist())
    with tarfile.open(dist / f"regward-{__version__}.tar.gz") as sdist:
        inside = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert wanted <= inside


def _venv(where: Path, wheel: str) -> Path:
    # Without pip (ensurepip alone takes most of a minute here): uv installs.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120
    )
    uv = Path(sys.executable).parent / "uv"
    python = where / "bin" / "python"
    install = [str(uv), "pip", "install", "--quiet", "--python", str(python), wheel]
    done = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return where / "bin" / "regward"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGWARD_", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def server_install(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv-server") / "v", f"{_wheel(dist)}[server]")


@pytest.fixture
def running(server_install: Path, tmp_path: Path) -> Iterator[str]:
    env = _clean_env(REGWARD_DATA_DIR=str(tmp_path / "data"))
    init = subprocess.run(
        [str(server_install), "server", "init", "--org", "acme", "--owner", "alice", *STDIN],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    assert "organization 'acme' created" in init.stdout
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(server_install), "server", "run", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    try:
        wait_for(ready, 180, "the installed server to be ready")
        assert process.poll() is None, log.read_text()
        yield url
    finally:
        process.terminate()
        process.wait(30)


def test_the_installed_server_runs_and_serves(server_install: Path, running: str) -> None:
    version = subprocess.run([str(server_install), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"regward {__version__}"
    answer = httpx.post(
        f"{running}/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['token']}"}
    policy = httpx.get(f"{running}/api/v1/orgs/acme/policy", headers=headers)
    assert policy.status_code == 200 and policy.json()["policy"]["organization"] == "acme"
    page = httpx.get(f"{running}/static/regward.css")  # a file only package data carries
    assert page.status_code == 200 and page.text


def test_without_the_extra_server_commands_name_it(dist: Path, tmp_path: Path) -> None:
    regward = _venv(tmp_path / "agent-only", str(_wheel(dist)))
    env = _clean_env(REGWARD_DATA_DIR=str(tmp_path / "data"))
    version = subprocess.run([str(regward), "--version"], capture_output=True, text=True, env=env)
    assert version.stdout.strip() == f"regward {__version__}"
    for command in (["server", "init", "--org", "a", "--owner", "b"], ["server", "run"]):
        done = subprocess.run(
            [str(regward), *command], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "install it with pip install 'regward[server]'" in done.stderr
    policy = tmp_path / "policy.yaml"
    policy.write_text("organization: acme\nenabled: true\nregistries:\n  - address: ghcr.io\n")
    check = [str(regward), "check", "--policy", str(policy), "quay.io/x/y"]
    done = subprocess.run(check, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "denied" in done.stdout  # the agent's side works alone
