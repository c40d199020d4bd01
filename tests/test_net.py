"""Network addresses: one rule for neuron URLs, one answer to "is this host loopback"."""

from __future__ import annotations

import resource

import pytest

from ganglion.errors import FleetError
from ganglion.net import base_url, default_name, is_loopback, normalize_url, raise_open_files


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("gpu-box.lan", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_neuron_url_loses_its_trailing_slash_and_keeps_its_path() -> None:
    assert normalize_url(" http://gpu-box:11434/ ") == "http://gpu-box:11434"
    assert normalize_url("https://lab.example/llm/") == "https://lab.example/llm"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gpu-box:11434", "is not a neuron URL"),
        ("ftp://gpu-box:21", "is not a neuron URL"),
        ("http://user:pw@gpu-box:11434", "cannot carry credentials"),
        ("http://gpu-box:11434/?x=1", "has a query or fragment"),
        ("http://gpu-box:99999", "has an invalid port"),
    ],
)
def test_what_is_not_a_neuron_url_says_why(url: str, message: str) -> None:
    with pytest.raises(FleetError, match=message):
        normalize_url(url)


def test_an_adapter_takes_a_bare_host_and_port_as_http_under_the_same_rule() -> None:
    assert base_url("gpu-box:11434/") == "http://gpu-box:11434"
    assert base_url("https://gpu-box:8080/v1/") == "https://gpu-box:8080/v1"
    with pytest.raises(FleetError, match="cannot carry credentials"):
        base_url("user:pw@gpu-box:11434")


def test_the_default_name_is_host_and_port() -> None:
    assert default_name("http://gpu-box.lan:11434") == "gpu-box.lan-11434"


def test_the_open_file_limit_is_raised_as_far_as_the_hard_limit_allows() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert raise_open_files(512) == min(512, hard)
        assert raise_open_files(300) == min(512, hard)  # never lowered
        top = raise_open_files()
        assert hard in (top, resource.RLIM_INFINITY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
