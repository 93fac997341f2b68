#!/usr/bin/env bash
# One-time set-up for a fresh machine: system packages (when root) and the virtual environment.
# Idempotent and quick when everything is already there. Used by `make run`, `make test` and `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts the tests drive: dockerd, registries, skopeo, Chromium, squid (bench baseline), PostgreSQL 15.
APT_PACKAGES=(docker.io docker-registry skopeo podman chromium squid postgresql-15 iproute2 openssl nftables busybox-static)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps -e .
  touch "$stamp"
fi
