"""Bad input through a real gateway process: every mistake is answered in the caller's
dialect with what was wrong, never with a 5xx. Bodies over the limit get 413, whether
they declare their length or arrive chunked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import ollama
import openai
import pytest

from ganglion.config import DEFAULT_MAX_BODY_BYTES
from ganglion.fleet.neuron import NAME_PATTERN
from ganglion.store import Store
from ganglion.store.schema import NeuronRow
from tests.conftest import Proc, Spawner

LIMIT = 64 * 1024  # the test gateway's GANGLION_MAX_BODY_BYTES
ROUTES = ["/api/chat", "/v1/chat/completions", "/fleet/neurons"]  # one per dialect


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A gateway with a 64 KiB body limit, in front of one simulated neuron serving llama3."""
    tmp = tmp_path_factory.mktemp("bad-input")
    spawner = Spawner(tmp)
    try:
        sim = spawner.sim(500, model="llama3")
        proc = spawner.gateway(
            f"sqlite:///{tmp / 'bad.db'}", env={"GANGLION_MAX_BODY_BYTES": str(LIMIT)}
        )
        httpx.post(f"{proc.url}/fleet/neurons", json={"url": sim.url}).raise_for_status()
        yield proc
    finally:
        spawner.close()


def message(response: httpx.Response) -> str:
    """The one-line error, checking it has the shape of the route's dialect."""
    error = response.json()["error"]
    if response.url.path.startswith("/v1/"):
        assert set(error) >= {"message", "type", "code"}, error
        assert error["code"] == response.status_code
        assert error["type"] == "invalid_request_error"
        said: str = error["message"]
    else:
        assert isinstance(error, str), error
        said = error
    assert "\n" not in said
    return said


def chat_body(padding: int) -> dict[str, Any]:
    text = "x" * padding
    return {"model": "llama3", "messages": [{"role": "user", "content": text}], "stream": False}


# -- the body limit --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_length_over_the_limit_is_refused(gateway: Proc, path: str) -> None:
    response = httpx.post(gateway.url + path, content=b"{" + b" " * LIMIT + b"}")
    assert response.status_code == 413
    said = message(response)
    assert "64 KiB (65536 bytes)" in said
    assert "GANGLION_MAX_BODY_BYTES" in said


@pytest.mark.parametrize("path", ROUTES)
def test_a_chunked_body_is_counted_as_it_arrives(gateway: Proc, path: str) -> None:
    def pieces() -> Iterator[bytes]:
        for _ in range(4 * LIMIT // 4096):  # four times the limit, 4 KiB at a time
            yield b" " * 4096

    request = httpx.Request("POST", gateway.url + path, content=pieces())
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    with httpx.Client() as client:
        response = client.send(request)
    assert response.status_code == 413
    assert "64 KiB" in message(response)


def test_bodies_under_the_limit_pass_declared_or_chunked(gateway: Proc) -> None:
    body = json.dumps(chat_body(LIMIT - 1024)).encode()
    assert len(body) < LIMIT
    declared = httpx.post(f"{gateway.url}/api/chat", content=body, timeout=60)
    assert declared.status_code == 200, declared.text
    chunks = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    chunked = httpx.post(f"{gateway.url}/v1/chat/completions", content=chunks, timeout=60)
    assert chunked.status_code == 200, chunked.text
    assert chunked.json()["choices"][0]["message"]["content"]


def test_the_default_limit_is_8_mib(spawn: Spawner, tmp_path: Path) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 8 * 1024 * 1024
    default = spawn.gateway(f"sqlite:///{tmp_path / 'default.db'}")
    over = httpx.post(f"{default.url}/api/generate", content=b" " * (DEFAULT_MAX_BODY_BYTES + 1))
    assert over.status_code == 413
    assert "8 MiB (8388608 bytes)" in message(over)
    under = httpx.post(f"{default.url}/api/generate", content=b" " * 1024 * 1024)
    assert under.status_code == 400  # read whole, then refused as not JSON
    assert "not valid JSON" in message(under)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", None]
)  # curl -d, a careless client, none at all
def test_a_json_body_is_read_whatever_its_declared_type(
    gateway: Proc, content_type: str | None
) -> None:
    request = httpx.Request("POST", f"{gateway.url}/api/chat", content=json.dumps(chat_body(8)))
    assert "content-type" not in request.headers  # httpx declares none for raw content
    if content_type is not None:
        request.headers["content-type"] = content_type
    with httpx.Client(timeout=60) as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["message"]["content"]


# -- malformed JSON and wrong types, on every POST route --------------------------------------


def post_routes(gateway: Proc) -> list[tuple[str, bool]]:
    """Every POST route in the gateway's OpenAPI, with whether it takes a JSON body; path
    parameters are filled with a name nothing has."""
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    routes = []
    for path, operations in spec["paths"].items():
        if "post" in operations:
            filled = path.replace("{name}", "ghost").replace("{run_id}", "ghost")
            routes.append((filled, "requestBody" in operations["post"]))
    return sorted(routes)


def test_every_post_route_is_covered(gateway: Proc) -> None:
    routes = dict(post_routes(gateway))
    assert len(routes) >= 14
    assert all(routes[path] for path in ("/api/chat", "/v1/embeddings", "/fleet/runs"))
    assert not routes["/fleet/neurons/ghost/suspend"]


def test_malformed_json_is_a_400_on_every_post_route(gateway: Proc) -> None:
    for path, takes_body in post_routes(gateway):
        response = httpx.post(
            gateway.url + path, content=b'{"model": "llama3",', headers=JSON, timeout=60
        )
        if takes_body:
            assert response.status_code == 400, (path, response.text)
            said = message(response)
            assert "not valid JSON" in said, (path, said)
            assert "character 19" in said, (path, said)
        else:  # nothing reads the body: the route answers for the name it was given
            assert response.status_code == 404, (path, response.text)
            assert "ghost" in message(response)


TAKES_A_LIST = {"/fleet/neurons"}  # one neuron, or a list of them to register at once


def test_wrong_types_are_a_422_naming_the_field_on_every_post_route(gateway: Proc) -> None:
    wrong = {"model": 5, "messages": "hi", "prompt": [1], "input": 7, "url": 5, "task": 5}
    wrong |= {"neurons": "all"}
    for path, takes_body in post_routes(gateway):
        if not takes_body:
            continue
        response = httpx.post(gateway.url + path, json=wrong, timeout=60)
        assert response.status_code == 422, (path, response.text)
        said = message(response)
        assert said.startswith("invalid request: "), (path, said)
        field = said.removeprefix("invalid request: ").split(" should be a valid ")[0]
        assert field in wrong, (path, said)
        array = httpx.post(gateway.url + path, json=[wrong], timeout=60)
        assert array.status_code == 422
        if path in TAKES_A_LIST:  # each item is checked, and named by its place
            assert message(array).startswith("invalid request: 0.url should be"), path
        else:
            assert "must be one JSON object, not an array" in message(array), path
        empty = httpx.post(gateway.url + path, timeout=60)
        assert empty.status_code == 422
        assert "body is missing" in message(empty), path


def test_a_bad_field_is_named_for_openai_clients(gateway: Proc) -> None:
    with (
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client,
        pytest.raises(openai.UnprocessableEntityError) as caught,
    ):
        client.chat.completions.create(model="llama3", messages="hi")  # type: ignore[arg-type]
    assert caught.value.param == "messages"
    assert "messages should be a valid list (got 'hi')" in caught.value.message


def test_wrong_values_are_refused_with_the_rule(gateway: Proc) -> None:
    too_many = httpx.post(f"{gateway.url}/fleet/runs", json={"task": "t", "max_subtasks": 99})
    assert too_many.status_code == 422
    assert "max_subtasks should be less than or equal to 32 (got 99)" in message(too_many)
    limit = httpx.get(f"{gateway.url}/fleet/runs", params={"limit": -1})
    assert limit.status_code == 422
    assert "query parameter limit" in message(limit)
    bad_url = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": "ftp://box"})
    assert bad_url.status_code == 422
    assert "http://HOST:PORT" in message(bad_url)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"seed": 10**30, "stream": False}),
        ("/v1/chat/completions", {"max_tokens": 10**400, "stream": True}),
        ("/api/chat", {"options": {"seed": -(10**30)}, "stream": False}),
        ("/api/chat", {"options": {"num_predict": 10**400}}),
    ],
)
def test_numbers_past_64_bits_are_the_neurons_to_judge(
    gateway: Proc, path: str, body: dict[str, Any]
) -> None:
    """JSON has no integer limit; a fast encoder does (64 bits), and so does a float. The
    gateway passes such a number on as it came, and the neuron says whether it takes it
    (the simulated one writes up to its context: the first line is enough here)."""
    chat = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{gateway.url}{path}", json=chat | body, timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert next(response.iter_lines())


def test_unknown_endpoints_and_methods_answer_in_the_dialect(gateway: Proc) -> None:
    missing = httpx.post(f"{gateway.url}/v1/no-such-thing", json={})
    assert missing.status_code == 404
    assert "/docs" in message(missing)
    wrong_method = httpx.put(f"{gateway.url}/api/chat", json={})
    assert wrong_method.status_code == 405
    assert "PUT is not allowed on /api/chat" in message(wrong_method)


JSON = {"content-type": "application/json"}


# -- unknown models, through the official clients ---------------------------------------------


def test_unknown_models_are_404_for_the_ollama_client(gateway: Proc) -> None:
    with ollama.Client(host=gateway.url) as client:
        unknown_models_are_404(client)


def unknown_models_are_404(client: ollama.Client) -> None:
    calls = [
        lambda: client.chat(model="ghost", messages=[{"role": "user", "content": "hi"}]),
        lambda: client.generate(model="ghost", prompt="hi"),
        lambda: client.embed(model="ghost", input="hi"),
        lambda: client.show("ghost"),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 404
        assert "'ghost' is not served by any active neuron" in caught.value.error
    streamed = client.chat(model="ghost", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(ollama.ResponseError) as caught:
        next(iter(streamed))
    assert caught.value.status_code == 404


def test_unknown_models_are_not_found_for_the_openai_client(gateway: Proc) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client:
        unknown_models_are_not_found(client)


def unknown_models_are_not_found(client: openai.OpenAI) -> None:
    calls = [
        lambda: client.chat.completions.create(
            model="ghost", messages=[{"role": "user", "content": "hi"}]
        ),
        lambda: client.completions.create(model="ghost", prompt="hi"),
        lambda: client.embeddings.create(model="ghost", input="hi"),
        lambda: client.chat.completions.create(
            model="ghost", messages=[{"role": "user", "content": "hi"}], stream=True
        ),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert "'ghost' is not served by any active neuron" in caught.value.message
        assert caught.value.type == "invalid_request_error"


# -- text the store cannot hold ----------------------------------------------------------------


@pytest.mark.postgres
def test_nul_characters_are_refused_before_they_reach_postgresql(
    spawn: Spawner, fresh_postgres: str
) -> None:
    """PostgreSQL's text cannot hold NUL: such a name, task or id is the caller's mistake."""
    gateway = spawn.gateway(fresh_postgres)
    sim = spawn.sim(500, model="llama3")
    cases = [
        ("post", "/fleet/neurons", {"url": sim.url, "name": "a\x00b"}, 422, "name must be"),
        ("post", "/fleet/neurons", {"url": sim.url, "node": "rack\x00"}, 422, "node"),
        ("post", "/fleet/runs", {"task": "plan\x00it"}, 422, "task"),
        ("post", "/fleet/runs", {"task": "t", "model": "m\x00"}, 422, "model"),
        ("get", "/fleet/runs/ab%00cd", None, 404, "no run"),
        ("post", "/fleet/runs/ab%00cd/cancel", None, 404, "no run"),
    ]
    for method, path, body, status, words in cases:
        response = httpx.request(method, gateway.url + path, json=body, timeout=30)
        assert response.status_code == status, (path, body, response.text)
        assert words in message(response)
        if status == 422 and words != "name must be":
            assert "must not contain NUL characters" in message(response)
    added = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim.url, "name": "ok"})
    assert added.status_code == 201  # the store is still fine


# -- neuron names ------------------------------------------------------------------------------


def test_a_neuron_name_is_refused_unless_it_fits_urls_headers_and_labels(gateway: Proc) -> None:
    """A name goes into the X-Ganglion-Neuron header of every answer: one a header cannot
    carry (schemathesis found '\U0008bd56' turned every answer of that neuron into a 500)."""
    sim_url = httpx.get(f"{gateway.url}/fleet/neurons").json()[0]["url"]
    for name in ["gpu\U0008bd56", "gpü", "gpu box", "gpu/box", "-gpu", "", "x" * 201]:
        refused = httpx.post(f"{gateway.url}/fleet/neurons", json={"url": sim_url, "name": name})
        assert refused.status_code == 422, (name, refused.text)
        said = message(refused)
        assert "invalid request: name must be letters, digits, '.', '_' and '-'" in said
    schema = httpx.get(f"{gateway.url}/openapi.json").json()["components"]["schemas"]
    assert schema["NewNeuron"]["properties"]["name"]["anyOf"][0]["pattern"] == NAME_PATTERN


def test_a_name_stored_before_the_rule_still_answers(spawn: Spawner, tmp_path: Path) -> None:
    """A store written before names were checked may hold any name: its answers carry the
    name percent-encoded, and pinning with that value reaches it."""
    sim = spawn.sim(500, model="llama3")
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store.open(url)
    old = "gpü \U0008bd56"
    store.add_neuron(
        NeuronRow(
            name=old, url=sim.url, api="ollama", node="box", models=["llama3"], status="active"
        )
    )
    store.close()
    gateway = spawn.gateway(url)
    said = {"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    for path in ["/v1/chat/completions", "/api/chat"]:
        answer = httpx.post(f"{gateway.url}{path}", json=said, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Ganglion-Neuron"] == quote(old, safe="")
        pinned = httpx.post(
            f"{gateway.url}{path}",
            json=said,
            headers={"X-Ganglion-Neuron": answer.headers["X-Ganglion-Neuron"]},
            timeout=30,
        )
        assert pinned.status_code == 200, pinned.text
    with ollama.Client(host=gateway.url) as client:
        assert client.embed(model="llama3", input="hi").embeddings
