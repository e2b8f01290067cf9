"""API users and their revocable tokens: the /api/v1/users admin API, /api/v1/me, the role
model on other routers, and the ``chargeops user``/``chargeops token`` commands."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.api_auth import (
    ApiToken,
    AuthFailure,
    DuplicateUser,
    Principal,
    authenticate,
    create_token,
)
from services.cli import app as cli_app
from services.db import Database, utcnow
from services.observability.metrics import REGISTRY
from services.security import hash_token
from tests.conftest import ADMIN_TOKEN, PASSWORD, Running

PROBLEM = "application/problem+json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_failures(reason: str) -> float:
    value = REGISTRY.get_sample_value("chargeops_http_auth_failures_total", {"reason": reason})
    return value or 0.0


async def add_user(api: httpx.AsyncClient, name: str, role: str) -> dict[str, Any]:
    r = await api.post("/api/v1/users", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def add_token(api: httpx.AsyncClient, user: str, label: str) -> str:
    r = await api.post(f"/api/v1/users/{user}/tokens", json={"label": label})
    assert r.status_code == 201, r.text
    assert r.json()["token_name"] == f"{user}/{label}"
    token: str = r.json()["token"]
    return token


async def me(running: Running, token: str) -> httpx.Response:
    return await running.api.get("/api/v1/me", headers=bearer(token))


async def add_charger(running: Running, token: str, charger_id: str) -> httpx.Response:
    body = {"id": charger_id, "password": PASSWORD, "security_profile": 1}
    return await running.api.post("/api/v1/chargers", json=body, headers=bearer(token))


def assert_unauthorized(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers["www-authenticate"] == "Bearer"  # RFC 9110 11.6.1


# ------------------------------------------------------------------ HTTP API
async def test_seeded_admin_is_user_admin_with_bootstrap_token(running: Running) -> None:
    r = await running.api.get("/api/v1/me")
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "admin", "role": "admin", "token_name": "admin/bootstrap"}
    users = (await running.api.get("/api/v1/users")).json()
    [admin] = [u for u in users["items"] if u["name"] == "admin"]
    assert admin["role"] == "admin" and admin["disabled_at"] is None
    assert [t["name"] for t in admin["tokens"]] == ["admin/bootstrap"]
    assert users["legacy_tokens"] == []


async def test_dispatcher_token_works_and_role_change_applies_at_once(running: Running) -> None:
    created = await add_user(running.api, "dana", "dispatcher")
    assert created["name"] == "dana" and created["tokens"] == []
    token = await add_token(running.api, "dana", "laptop")

    r = await me(running, token)
    assert r.json() == {"name": "dana", "role": "dispatcher", "token_name": "dana/laptop"}
    assert (await add_charger(running, token, "CP-DANA-1")).status_code == 201

    r = await running.api.patch("/api/v1/users/dana", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "viewer"
    assert (await me(running, token)).json()["role"] == "viewer"
    r = await add_charger(running, token, "CP-DANA-2")
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    listed = await running.api.get("/api/v1/chargers", headers=bearer(token))
    assert listed.status_code == 200, listed.text


async def test_revoked_token_is_refused_others_keep_working(running: Running) -> None:
    await add_user(running.api, "ops", "dispatcher")
    laptop = await add_token(running.api, "ops", "laptop")
    phone = await add_token(running.api, "ops", "phone")
    before = auth_failures("revoked")

    r = await running.api.delete("/api/v1/users/ops/tokens/laptop")
    assert r.status_code == 204, r.text
    assert_unauthorized(await me(running, laptop))
    assert auth_failures("revoked") == before + 1
    assert (await me(running, phone)).status_code == 200
    assert (await running.api.delete("/api/v1/users/ops/tokens/laptop")).status_code == 204

    tokens = (await running.api.get("/api/v1/users/ops")).json()["tokens"]
    by_name = {t["name"]: t for t in tokens}
    assert by_name["ops/laptop"]["revoked_at"] is not None
    assert by_name["ops/phone"]["revoked_at"] is None


async def test_disabled_user_loses_every_token_until_enabled(running: Running) -> None:
    await add_user(running.api, "tech-1", "technician")
    tokens = [await add_token(running.api, "tech-1", label) for label in ("a", "b")]
    before = auth_failures("disabled")

    r = await running.api.patch("/api/v1/users/tech-1", json={"disabled": True})
    assert r.status_code == 200, r.text
    assert r.json()["disabled_at"] is not None
    for token in tokens:
        assert_unauthorized(await me(running, token))
    assert auth_failures("disabled") == before + 2
    r = await running.api.post("/api/v1/users/tech-1/tokens", json={"label": "c"})
    assert r.status_code == 409, r.text

    r = await running.api.patch("/api/v1/users/tech-1", json={"disabled": False})
    assert r.json()["disabled_at"] is None
    for token in tokens:
        assert (await me(running, token)).json()["role"] == "technician"


@pytest.mark.parametrize("role", ["dispatcher", "technician", "viewer"])
async def test_only_admins_manage_users(running: Running, role: str) -> None:
    token = await create_token(running.system.db, "someone", role)
    headers = bearer(token)
    calls: list[tuple[str, str, dict[str, str] | None]] = [
        ("GET", "/api/v1/users", None),
        ("GET", "/api/v1/users/admin", None),
        ("POST", "/api/v1/users", {"name": "x", "role": "admin"}),
        ("PATCH", "/api/v1/users/someone", {"role": "admin"}),
        ("POST", "/api/v1/users/someone/tokens", {"label": "x"}),
        ("DELETE", "/api/v1/users/admin/tokens/bootstrap", None),
    ]
    for method, url, body in calls:
        r = await running.api.request(method, url, json=body, headers=headers)
        assert r.status_code == 403, (method, url, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    assert (await me(running, token)).json()["role"] == role
    assert (await running.api.get("/api/v1/me")).status_code == 200


async def test_viewer_may_read_but_not_write_elsewhere(running: Running) -> None:
    token = await create_token(running.system.db, "v", "viewer")
    assert (await me(running, token)).json() == {
        "name": "v",
        "role": "viewer",
        "token_name": "v/token1",
    }
    r = await add_charger(running, token, "CP-VIEW")
    assert r.status_code == 403, r.text
    assert (await running.api.get("/api/v1/chargers", headers=bearer(token))).status_code == 200
    second = await create_token(running.system.db, "v", "viewer")
    assert (await me(running, second)).json()["token_name"] == "v/token2"
    with pytest.raises(DuplicateUser, match="exists with role"):
        await create_token(running.system.db, "v", "admin")


async def test_unauthenticated_and_unknown_tokens_get_401(running: Running) -> None:
    before = auth_failures("invalid")
    for headers in ({"Authorization": ""}, {"Authorization": "Basic abc"}):
        assert_unauthorized(await running.api.get("/api/v1/me", headers=headers))
        assert_unauthorized(await running.api.get("/api/v1/users", headers=headers))
    assert_unauthorized(await me(running, "co_not-a-token"))
    assert auth_failures("invalid") == before + 1


async def test_bad_input_duplicates_and_unknown_users(running: Running) -> None:
    api = running.api
    await add_user(api, "erin", "viewer")
    r = await api.post("/api/v1/users", json={"name": "erin", "role": "admin"})
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith(PROBLEM)

    bad_users = [
        {"name": "Erin", "role": "viewer"},
        {"name": "a/b", "role": "viewer"},
        {"name": "", "role": "viewer"},
        {"name": "-x", "role": "viewer"},
        {"name": "x" * 101, "role": "viewer"},
        {"name": "ok", "role": "root"},
        {"name": "ok", "role": "viewer", "extra": 1},
    ]
    for body in bad_users:
        r = await api.post("/api/v1/users", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
    assert (await api.patch("/api/v1/users/erin", json={})).status_code == 422
    assert (await api.patch("/api/v1/users/erin", json={"role": "boss"})).status_code == 422
    r = await api.post("/api/v1/users/erin/tokens", json={"label": "Bad Label"})
    assert r.status_code == 422, r.text
    r = await api.post("/api/v1/users/erin/tokens", json={"label": "y" * 100})
    assert r.status_code == 422, r.text

    await add_token(api, "erin", "cli")
    r = await api.post("/api/v1/users/erin/tokens", json={"label": "cli"})
    assert r.status_code == 409 and "token" not in r.json(), r.text

    for r in (
        await api.get("/api/v1/users/nobody"),
        await api.patch("/api/v1/users/nobody", json={"role": "viewer"}),
        await api.post("/api/v1/users/nobody/tokens", json={"label": "x"}),
        await api.delete("/api/v1/users/nobody/tokens/x"),
        await api.delete("/api/v1/users/erin/tokens/missing"),
    ):
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith(PROBLEM)


async def test_tokens_are_shown_once_and_hashes_never(running: Running) -> None:
    await add_user(running.api, "fay", "technician")
    token = await add_token(running.api, "fay", "tablet")
    secrets = (token, hash_token(token), ADMIN_TOKEN, hash_token(ADMIN_TOKEN))
    answers = [
        await running.api.get("/api/v1/users"),
        await running.api.get("/api/v1/users/fay"),
        await running.api.patch("/api/v1/users/fay", json={"role": "viewer"}),
        await running.api.post("/api/v1/users/fay/tokens", json={"label": "tablet"}),
        await me(running, token),
        await running.api.get("/api/v1/me"),
        await running.api.get("/openapi.json"),
    ]
    for r in answers:
        for secret in secrets:
            assert secret not in r.text, r.request.url
    assert "token_hash" not in answers[0].text


async def test_last_enabled_admin_cannot_be_demoted_or_disabled(running: Running) -> None:
    api = running.api
    for body in ({"role": "viewer"}, {"disabled": True}):
        r = await api.patch("/api/v1/users/admin", json=body)
        assert r.status_code == 409, r.text
    assert (await api.get("/api/v1/me")).json()["role"] == "admin"

    await add_user(api, "root2", "admin")
    r = await api.patch("/api/v1/users/admin", json={"role": "viewer"})
    assert r.status_code == 200, r.text
    assert (await api.get("/api/v1/me")).json()["role"] == "viewer"
    assert (await api.get("/api/v1/users")).status_code == 403


async def test_token_made_before_users_keeps_its_own_role(running: Running) -> None:
    token = "co_legacy-token-0123456789abcdefghij"
    async with running.system.db.session() as session:
        session.add(
            ApiToken(
                name="old-ops",
                token_hash=hash_token(token),
                role="dispatcher",
                created_at=utcnow(),
                user_name=None,
            )
        )
        await session.commit()
    r = await me(running, token)
    assert r.json() == {"name": "old-ops", "role": "dispatcher", "token_name": "old-ops"}
    legacy = (await running.api.get("/api/v1/users")).json()["legacy_tokens"]
    assert [(t["name"], t["role"], t["revoked_at"]) for t in legacy] == [
        ("old-ops", "dispatcher", None)
    ]


# ------------------------------------------------------------------ CLI
@pytest.fixture
def cli_db(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "cli.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


def chargeops(url: str, *args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), env={"CHARGEOPS_DATABASE_URL": url})


async def _authenticate(url: str, token: str) -> Principal | str:
    db = Database(url)
    try:
        return await authenticate(db, token)
    except AuthFailure as exc:
        return exc.reason
    finally:
        await db.dispose()


def principal_of(url: str, token: str) -> Principal | str:
    return asyncio.run(_authenticate(url, token))


def test_cli_user_and_token_lifecycle(cli_db: str) -> None:
    created = chargeops(cli_db, "user", "create", "dana", "--role", "technician")
    assert created.exit_code == 0, created.output
    again = chargeops(cli_db, "user", "create", "dana", "--role", "viewer")
    assert again.exit_code == 1 and "already exists" in again.stderr
    assert chargeops(cli_db, "user", "create", "Dana", "--role", "viewer").exit_code == 1
    assert chargeops(cli_db, "user", "create", "eve", "--role", "root").exit_code == 1

    issued = chargeops(cli_db, "token", "create", "dana", "phone")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    assert "dana/phone" in issued.stderr and "dana/phone" not in issued.stdout
    assert principal_of(cli_db, token) == Principal("dana", "technician", "dana/phone")
    assert chargeops(cli_db, "token", "create", "dana", "phone").exit_code == 1
    assert chargeops(cli_db, "token", "create", "nobody", "x").exit_code == 1

    revoked = chargeops(cli_db, "token", "revoke", "dana/phone")
    assert revoked.exit_code == 0, revoked.output
    assert principal_of(cli_db, token) == "revoked"
    assert chargeops(cli_db, "token", "revoke", "dana/phone").exit_code == 1


def test_cli_disable_refuses_all_tokens_of_the_user(cli_db: str) -> None:
    assert chargeops(cli_db, "user", "create", "ops", "--role", "dispatcher").exit_code == 0
    tokens = [
        chargeops(cli_db, "token", "create", "ops", label).stdout.strip() for label in ("a", "b")
    ]
    assert [principal_of(cli_db, t) for t in tokens] == [
        Principal("ops", "dispatcher", "ops/a"),
        Principal("ops", "dispatcher", "ops/b"),
    ]
    disabled = chargeops(cli_db, "user", "disable", "ops")
    assert disabled.exit_code == 0, disabled.output
    assert [principal_of(cli_db, t) for t in tokens] == ["disabled", "disabled"]
    assert chargeops(cli_db, "user", "disable", "nobody").exit_code == 1


def test_cli_older_token_create_form_still_works(cli_db: str) -> None:
    first = chargeops(cli_db, "token", "create", "--name", "ops", "--role", "admin")
    assert first.exit_code == 0, first.output
    second = chargeops(cli_db, "token", "create", "--name", "ops", "--role", "admin")
    assert principal_of(cli_db, first.stdout.strip()) == Principal("ops", "admin", "ops/token1")
    assert principal_of(cli_db, second.stdout.strip()) == Principal("ops", "admin", "ops/token2")
    mismatch = chargeops(cli_db, "token", "create", "--name", "ops", "--role", "viewer")
    assert mismatch.exit_code == 1 and "exists with role" in mismatch.stderr
    assert chargeops(cli_db, "token", "create", "ops", "x", "--name", "ops").exit_code == 2
    assert chargeops(cli_db, "token", "create", "ops", "x", "--role", "admin").exit_code == 2
    assert chargeops(cli_db, "token", "create", "ops").exit_code == 2
