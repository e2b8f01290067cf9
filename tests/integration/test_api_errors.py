"""The HTTP API's error answers: problem documents for unexpected errors and for inputs that
must not reach the database (out-of-range ids, offsets and cursors, naive datetimes)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from services.api_auth import create_token
from tests.conftest import ADMIN_TOKEN, Running, register

PROBLEM = "application/problem+json"
CP = "CP-ERRORS"
BIG = 2**63  # one past PostgreSQL's BIGINT and SQLite's INTEGER
INT = 2**31  # one past PostgreSQL's INTEGER (teams, technicians, webhooks)


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    return body


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        # cursors: ASCII digits only (str.isdigit() took "²") and within BIGINT
        ("GET", f"/api/v1/chargers/{CP}/messages?cursor=%C2%B2", None),
        ("GET", f"/api/v1/chargers/{CP}/messages?cursor={BIG}", None),
        ("GET", f"/api/v1/chargers/{CP}/events?cursor=%C2%B2", None),
        ("GET", f"/api/v1/chargers/{CP}/events?cursor={10**30}", None),
        ("GET", f"/api/v1/chargers/{CP}/commands?cursor=%C2%B2", None),
        ("GET", f"/api/v1/commands?cursor={BIG}", None),
        # offsets
        ("GET", f"/api/v1/chargers?offset={BIG}", None),
        ("GET", f"/api/v1/id-tokens?offset={BIG}", None),
        ("GET", f"/api/v1/work-orders?offset={BIG}", None),
        ("GET", f"/api/v1/faults?offset={BIG}", None),
        ("GET", f"/api/v1/sites?offset={BIG}", None),
        ("GET", f"/api/v1/technicians?offset={BIG}", None),
        # ids in the query, the path and the body
        ("GET", f"/api/v1/commands?order_id={BIG}", None),
        ("POST", f"/api/v1/chargers/{CP}/commands/clear-cache?order_id={BIG}", None),
        ("GET", f"/api/v1/work-orders?assignee_id={INT}", None),
        ("GET", f"/api/v1/technicians?team_id={INT}", None),
        ("GET", f"/api/v1/work-orders/{BIG}", None),
        ("GET", f"/api/v1/work-orders/{BIG}/comments", None),
        ("GET", f"/api/v1/technicians/{INT}", None),
        ("GET", f"/api/v1/teams/{INT}", None),
        ("GET", f"/api/v1/webhooks/{INT}", None),
        ("POST", f"/api/v1/webhooks/1/deliveries/{BIG}/redeliver", None),
        ("POST", "/api/v1/work-orders/1/assign", {"technician_id": INT}),
        ("POST", "/api/v1/work-orders/1/escalate", {"team_id": INT, "reason": "x"}),
        # datetimes without a time zone
        ("POST", "/api/v1/id-tokens", {"token": "TAG1", "expires_at": "2030-01-01T00:00:00"}),
        ("PATCH", "/api/v1/id-tokens/TAG1", {"expires_at": "2030-01-01T00:00:00"}),
        ("GET", f"/api/v1/chargers/{CP}/status-history?since=2030-01-01T00:00:00", None),
        # datetimes out of range once in UTC (an OverflowError of the column: 500)
        ("POST", "/api/v1/id-tokens", {"token": "TAG2", "expires_at": "9999-12-31T23:00:00-05:00"}),
        ("POST", "/api/v1/id-tokens", {"token": "TAG2", "expires_at": "0001-01-01T00:00:00+05:00"}),
        ("PATCH", "/api/v1/id-tokens/TAG1", {"expires_at": "9999-12-31T23:00:00-05:00"}),
    ],
)
async def test_out_of_range_input_is_a_422_problem(
    running: Running, method: str, url: str, body: dict[str, Any] | None
) -> None:
    await register(running.api, CP)
    r = await running.api.request(method, url, json=body)
    assert_problem(r, 422)


async def test_unexpected_error_is_a_500_problem_without_internals(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    app = running.system.app

    async def broken() -> None:
        raise RuntimeError("secret internal state")

    app.add_api_route("/api/v1/broken-for-test", broken)
    # the in-process transport re-raises what the app raised after it answered; a server
    # would not (it logs it), so look only at the answer here
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://chargeops.test",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as api:
        with caplog.at_level(logging.ERROR, logger="services.problems"):
            r = await api.get("/api/v1/broken-for-test")
    body = assert_problem(r, 500)
    assert body["title"] == "Internal Server Error" and body["detail"]
    assert "secret" not in r.text and "RuntimeError" not in r.text
    [record] = [rec for rec in caplog.records if rec.name == "services.problems"]
    assert record.exc_info is not None and "secret internal state" in str(record.exc_info[1])


# ------------------------------------------------------------------ authentication first
MALFORMED = b'{"id": "CP-X", '


@pytest.mark.parametrize("authorization", [None, "Bearer co_not-a-token", "Basic eDp5"])
async def test_malformed_body_without_valid_token_is_401(
    running: Running, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.system.app), base_url="http://chargeops.test"
    ) as anonymous:
        r = await anonymous.post("/api/v1/chargers", content=MALFORMED, headers=headers)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", ["technician", "viewer"])
async def test_malformed_body_with_a_token_of_a_refused_role_is_403(
    running: Running, role: str
) -> None:
    """The route's role check comes before its body's validation: the 422 would tell a
    caller who may not use the route what it accepts."""
    token = await create_token(running.system.db, f"{role}-user", role)
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.system.app), base_url="http://chargeops.test"
    ) as client:
        for body in (MALFORMED, b'{"id": 5}'):
            r = await client.post("/api/v1/chargers", content=body, headers=headers)
            assert_problem(r, 403)
        if role == "viewer":  # may read orders, never change them
            for action in ("transitions", "comments", "decline"):
                r = await client.post(
                    f"/api/v1/work-orders/1/{action}", content=MALFORMED, headers=headers
                )
                assert_problem(r, 403)
        # a role the route admits still gets the precise 422
        token = await create_token(running.system.db, "dispatcher-user", "dispatcher")
        headers["authorization"] = f"Bearer {token}"
        r = await client.post("/api/v1/chargers", content=MALFORMED, headers=headers)
        assert_problem(r, 422)


async def test_malformed_json_body_is_422_saying_so(running: Running) -> None:
    r = await running.api.post(
        "/api/v1/chargers", content=MALFORMED, headers={"content-type": "application/json"}
    )
    body = assert_problem(r, 422)
    assert body["detail"].startswith("the request body is not valid JSON"), body
    assert f"position {len(MALFORMED)}" in body["detail"]


# ------------------------------------------------------------------ 405
@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("PUT", "/api/v1/chargers", {"GET", "POST"}),
        ("POST", f"/api/v1/chargers/{CP}", {"GET", "PATCH", "DELETE"}),
        ("DELETE", "/api/v1/work-orders/1/comments", {"GET", "POST"}),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    running: Running, method: str, url: str, allowed: set[str]
) -> None:
    r = await running.api.request(method, url)
    assert_problem(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


# ------------------------------------------------------------------ OpenAPI
async def test_openapi_declares_bearer_scheme_and_problem_responses(running: Running) -> None:
    spec = (await running.api.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    problem = {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    assert "ProblemDetails" in spec["components"]["schemas"]
    for path, method in (
        ("/api/v1/chargers", "post"),
        ("/api/v1/work-orders/{order_id}", "get"),
        ("/api/v1/me", "get"),
        ("/api/v1/chargers/{charger_id}/commands/reset", "post"),
    ):
        operation = spec["paths"][path][method]
        assert operation["security"] == [{name: []}], path
        for status in ("401", "403", "404", "409", "422"):
            assert operation["responses"][status]["content"] == {PROBLEM: problem}, (path, status)
    assert "security" not in spec["paths"]["/healthz"]["get"]
    assert spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"] == {PROBLEM: problem}


async def test_readyz_names_the_failing_dependency_without_its_driver_message(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> None:
        raise OSError("connection refused: host db.internal, database chargeops_secret_name")

    monkeypatch.setattr(running.system.db, "ping", down)
    r = await running.api.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["checks"] == {"database": "unavailable (OSError)", "bus": "ok"}
    assert "secret_name" not in r.text


async def test_readyz_answers_503_as_soon_as_the_process_starts_stopping(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the stop closes chargers' sockets and flushes, a load balancer must see the
    process as not ready (it used to answer 200 until HTTP itself stopped)."""
    assert (await running.api.get("/readyz")).status_code == 200
    csms_runtime = running.system.csms
    assert csms_runtime is not None
    closing, release = asyncio.Event(), asyncio.Event()
    stop_accepting = csms_runtime.stop_accepting

    async def held() -> None:
        closing.set()
        await release.wait()
        await stop_accepting()

    monkeypatch.setattr(csms_runtime, "stop_accepting", held)
    stopping = asyncio.create_task(running.system.stop())
    await closing.wait()
    r = await running.api.get("/readyz")
    release.set()
    await stopping
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["checks"] == {"process": "stopping"}


# ------------------------------------------------------------------ NUL characters
@pytest.mark.parametrize(
    ("method", "url", "body", "loc"),
    [
        ("GET", "/api/v1/chargers/CP%00X", None, ["path", "charger_id"]),
        ("GET", "/api/v1/id-tokens/TAG%00", None, ["path", "token"]),
        ("GET", "/api/v1/users/a%00", None, ["path", "name"]),
        ("GET", "/api/v1/work-orders?charger_id=CP%00", None, ["query", "charger_id"]),
        ("GET", f"/api/v1/chargers/{CP}/messages?action=Boot%00", None, ["query", "action"]),
        ("PATCH", f"/api/v1/chargers/{CP}", {"notes": "a\x00b"}, ["body", "notes"]),
        ("POST", "/api/v1/id-tokens", {"token": "TAG9", "group_id": "g\x00"}, ["body", "group_id"]),
        ("POST", "/api/v1/teams", {"name": "night\x00shift"}, ["body", "name"]),
        ("POST", "/api/v1/technicians", {"slug": "t1", "name": "\x00"}, ["body", "name"]),
        ("POST", "/api/v1/work-orders/1/comments", {"text": "a\x00b"}, ["body", "text"]),
        (
            "POST",
            f"/api/v1/chargers/{CP}/commands/data-transfer",
            {"vendor_id": "v", "data": {"k": ["x", "\x00"]}},
            ["body", "data", "k", 1],
        ),
    ],
)
async def test_nul_in_any_input_is_a_422_problem_naming_it(
    running: Running, method: str, url: str, body: dict[str, Any] | None, loc: list[Any]
) -> None:
    """PostgreSQL cannot store NUL in text (it was a driver error answered as a 500 there,
    and stored as sent by SQLite): both refuse it and name where it was."""
    await register(running.api, CP, notes="kept")
    r = await running.api.request(method, url, json=body)
    problem = assert_problem(r, 422)
    assert {
        "loc": loc,
        "msg": "must not contain NUL characters (U+0000)",
        "type": "string_nul",
    } in (problem["errors"]), problem
    # nothing changed
    assert (await running.api.get(f"/api/v1/chargers/{CP}")).json()["notes"] == "kept"


async def test_nul_is_refused_only_where_it_is(running: Running) -> None:
    """An escaped backslash before u0000 is text, not a NUL; a NUL from an anonymous caller
    is its 401 first."""
    await register(running.api, CP)
    r = await running.api.patch(f"/api/v1/chargers/{CP}", json={"notes": "C:\\u0000"})
    assert r.status_code == 200, r.text
    assert r.json()["notes"] == "C:\\u0000"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.system.app), base_url="http://chargeops.test"
    ) as anonymous:
        assert_problem(await anonymous.get("/api/v1/chargers/CP%00X"), 401)


# ------------------------------------------------------------------ null in PATCH
@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/teams/1", "name"),
        ("/api/v1/teams/1", "contract_type"),
        ("/api/v1/sites/s1", "timezone"),
        ("/api/v1/technicians/1", "on_duty"),
        ("/api/v1/webhooks/1", "events"),
    ],
)
async def test_null_for_a_field_that_may_not_be_null_names_the_field(
    running: Running, url: str, field: str
) -> None:
    """The 422 said only 'invalid fields: body' (the check was a model validator)."""
    r = await running.api.patch(url, json={field: None})
    problem = assert_problem(r, 422)
    assert problem["detail"] == f"invalid fields: body.{field}", problem
    assert "may not be null" in problem["errors"][0]["msg"]


# ------------------------------------------------------------------ undecodable JSON
@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"notes": "\xff"}', "the request body is not valid JSON (not UTF-8 at position 11)"),
        (b'{"notes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "(nested too deeply)"),
    ],
)
async def test_json_body_that_cannot_be_decoded_is_422_saying_so_after_the_401(
    running: Running, content: bytes, detail: str
) -> None:
    """FastAPI answered these 400 'There was an error parsing the body', to anyone."""
    await register(running.api, CP, notes="kept")
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=running.system.app), base_url="http://chargeops.test"
    ) as anonymous:
        r = await anonymous.patch(f"/api/v1/chargers/{CP}", content=content, headers=headers)
        assert_problem(r, 401)
    r = await running.api.patch(f"/api/v1/chargers/{CP}", content=content, headers=headers)
    problem = assert_problem(r, 422)
    assert problem["detail"].endswith(detail), problem
    assert (await running.api.get(f"/api/v1/chargers/{CP}")).json()["notes"] == "kept"


# ------------------------------------------------------------------ whitespace-only text
async def test_work_order_text_of_whitespace_alone_is_refused(running: Running) -> None:
    """A title, comment or reason of spaces was taken, and a cancel reason of spaces passed
    for 'cancelling an order needs a reason'."""
    await register(running.api, CP)
    order = {"charger_id": CP, "category": "other"}
    r = await running.api.post("/api/v1/work-orders", json={**order, "title": " \t "})
    assert assert_problem(r, 422)["detail"] == "invalid fields: body.title"
    r = await running.api.post("/api/v1/work-orders", json={**order, "title": "  cable cut "})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["title"] == "cable cut"
    url = f"/api/v1/work-orders/{created['id']}"
    r = await running.api.post(f"{url}/comments", json={"text": "   "})
    assert assert_problem(r, 422)["detail"] == "invalid fields: body.text"
    r = await running.api.post(f"{url}/escalate", json={"team_id": 1, "reason": "  "})
    assert assert_problem(r, 422)["detail"] == "invalid fields: body.reason"
    r = await running.api.post(f"{url}/transitions", json={"to": "cancelled", "reason": "  "})
    assert "needs a reason" in assert_problem(r, 422)["detail"]
    after = (await running.api.get(url)).json()
    assert after["state"] == created["state"] and after["close_reason"] is None


async def test_a_body_over_the_limit_is_a_413_problem_before_it_is_read_whole(
    running: Running,
) -> None:
    """CHARGEOPS_HTTP_MAX_BODY_BYTES (1 MiB by default): a larger body is refused as it
    streams in (a 5 MB body used to be read whole and then refused as invalid), with or
    without a Content-Length."""
    big = b'{"id": "CP-BIG", "notes": "' + b"x" * (1024 * 1024) + b'"}'
    r = await running.api.post(
        "/api/v1/chargers", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 413

    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    r = await running.api.post(
        "/api/v1/chargers", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "CHARGEOPS_HTTP_MAX_BODY_BYTES" in r.json()["detail"]
    assert (await running.api.get("/api/v1/chargers/CP-BIG")).status_code == 404
    # A body under the limit is read as before (here: a field past its own maximum).
    r = await running.api.post("/api/v1/chargers", json={"id": "CP-BIG", "notes": "x" * 100_000})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["body", "notes"]


async def test_an_unknown_query_parameter_is_a_422_naming_it(running: Running) -> None:
    """A misspelt filter was ignored: ``?stat=open`` answered the unfiltered list."""
    r = await running.api.get("/api/v1/work-orders", params={"stat": "open"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["loc"] == ["query", "stat"]
    assert "state" in error["msg"]  # names what the route takes
    # Parameters a route takes, also through its dependencies, are accepted.
    r = await running.api.get("/api/v1/work-orders", params={"state": "new"})
    assert r.status_code == 200, r.text
    await register(running.api, CP)
    r = await running.api.get(f"/api/v1/chargers/{CP}/messages", params={"limit": 5, "x": "1"})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["query", "x"]
    # Without a token the answer is still the 401.
    async with httpx.AsyncClient(
        transport=running.api._transport, base_url=str(running.api.base_url)
    ) as anonymous:
        assert (await anonymous.get("/api/v1/work-orders?stat=open")).status_code == 401
