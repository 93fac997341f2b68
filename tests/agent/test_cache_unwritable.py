"""A fault with real parts (issue 13): the agent's directory becomes read-only (a tmpfs the test
mounts and remounts; root) while it syncs from a live server. A newly applied revision is still
verified and enforced, from memory; the cache keeps the older one; the check-in reports the
enforced revision; `regward status` says the cache cannot be written and what a restart would
enforce. Once the directory is writable again, the next answer writes the cache."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regward.agent.guard import Guard
from regward.agent.sync import Syncer
from tests.server.live import live_server

pytestmark = pytest.mark.e2e  # mounts a file system: needs root


@pytest.fixture
def state_disk(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "state"  # where live_server keeps the agent's state
    directory.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "regward-test", str(directory)],
        check=True,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


def _status(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REGWARD_AGENT_DIR": str(tmp_path / "state"),
        "REGWARD_REGISTRY_JSON": str(tmp_path / "registry.json"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "regward.cli", "status", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_an_unwritable_cache_enforces_new_revisions_from_memory_and_says_so(
    state_disk: Path, tmp_path: Path
) -> None:
    with live_server(tmp_path) as (_, owner, state, credentials):
        guard = Guard(state.enforcement())
        syncer = Syncer(state, guard, credentials, "agent-1", wait=1)

        def device() -> dict[str, Any]:
            (only,) = owner.get("/orgs/acme/devices").json()["devices"]
            return dict(only)

        async def steps() -> None:
            assert await syncer.poll_once(wait=0)
            first = state.cached_policy(credentials)
            assert first is not None and syncer.status.cache_error is None
            cached = state.policy_path.read_bytes()

            _remount(state_disk, "ro")
            added = owner.post("/orgs/acme/registry-access/registries", json={"address": "quay.io"})
            assert added.status_code == 201, added.text
            newer = owner.post("/orgs/acme/registry-access/apply").json()["revision"]
            assert await syncer.poll_once(wait=0)
            enforced = guard.enforcement.policy
            assert enforced is not None and enforced.revision == newer
            assert "quay.io" in [str(entry.address) for entry in enforced.registries]
            assert state.policy_path.read_bytes() == cached  # the cache could not change
            error = syncer.status.cache_error or ""
            assert "Read-only file system" in error, error
            assert f"revision {newer} from memory" in error
            assert f"a restart would enforce revision {first.revision}" in error
            assert device()["applied_revision"] == newer  # the server hears the truth

            report = json.loads(_status(tmp_path, "--json").stdout)
            assert report["cache"]["writable"] is False
            assert str(state_disk) in report["cache"]["error"]
            assert "Read-only file system" in report["cache"]["error"]
            assert report["cache"]["revision"] == first.revision
            words = _status(tmp_path).stdout
            assert "CACHE:" in words and f"revision {first.revision} (the cached one)" in words

            _remount(state_disk, "rw")
            assert not await syncer.poll_once(wait=0)  # nothing newer; the cache is retried
            assert syncer.status.cache_error is None
            rewritten = state.cached_policy(credentials)
            assert rewritten is not None and rewritten.revision == newer
            assert json.loads(_status(tmp_path, "--json").stdout)["cache"]["writable"] is True

        async def scenario() -> None:
            try:
                await steps()
            finally:
                await syncer.aclose()

        asyncio.run(scenario())
