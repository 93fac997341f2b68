"""Settings come from REGWARD_* variables, with clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from regward.errors import ConfigError
from regward.server.settings import Settings


def test_defaults_use_sqlite_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"REGWARD_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path}/regward.db"
    assert settings.is_sqlite
    assert settings.signing_key_path == tmp_path / "signing-key.pem"
    assert Settings.from_env({}).data_dir == Path("var").absolute()


def test_postgresql_urls_use_psycopg() -> None:
    for given in ("postgresql://u:p@db/regward", "postgres://u:p@db/regward"):
        settings = Settings.from_env({"REGWARD_DATABASE_URL": given})
        assert settings.database_url == "postgresql+psycopg://u:p@db/regward"
        assert not settings.is_sqlite


@pytest.mark.parametrize("value", ["soon", "-5", "0"])
def test_bad_numbers_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=f"REGWARD_MAX_WAIT='{value}'"):
        Settings.from_env({"REGWARD_MAX_WAIT": value})
