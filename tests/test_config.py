from __future__ import annotations

from pathlib import Path

import pytest

from ganglion.config import load_settings, normalize_database_url
from ganglion.errors import ConfigError
from ganglion.gateway.server import preflight


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


def test_public_bind_is_refused_without_keys(tmp_path: Path) -> None:
    """The settings load (they cannot see the store); preflight refuses, before binding."""
    settings = load_settings(host="0.0.0.0", database_url=f"sqlite:///{tmp_path / 'g.db'}")
    assert settings.keys_enforced
    with pytest.raises(ConfigError, match=r"refusing to bind 0\.0\.0\.0: .*keys create --admin"):
        preflight(settings)


def test_keys_are_enforced_off_loopback_or_on_request() -> None:
    assert not load_settings().keys_enforced
    assert not load_settings(host="127.0.0.2").keys_enforced
    assert load_settings(require_keys=True).keys_enforced
    assert load_settings(host="192.168.1.10").keys_enforced


def test_invalid_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("GANGLION_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    assert load_settings().database_url.endswith("x.db")
