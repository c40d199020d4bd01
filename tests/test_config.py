from __future__ import annotations

import pytest

from ganglion.config import load_settings, normalize_database_url
from ganglion.errors import ConfigError


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_database_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_database_url("postgres://u:p@h/db").startswith("postgresql+psycopg://")


@pytest.mark.parametrize("url", ["not a url", "mysql://x@h/db", "://"])
def test_bad_database_urls_say_what_works(url: str) -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///|postgresql://"):
        normalize_database_url(url)


def test_loopback_is_the_default_bind() -> None:
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 11435


def test_public_bind_is_refused_without_keys() -> None:
    with pytest.raises(ConfigError, match=r"refusing to bind 0\.0\.0\.0"):
        load_settings(host="0.0.0.0")


def test_invalid_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("GANGLION_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    assert load_settings().database_url.endswith("x.db")
