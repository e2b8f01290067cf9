"""The ``chargeops`` command.

Exit status: 0 done; 1 failed (e.g. a ``UserError``, the database or the bus cannot be reached,
or a port to listen on is in use: it may come up or be freed, so a supervisor may retry); 2 a bad
setting or usage (retrying will not help). Both failures print one line per problem to stderr,
never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from pydantic import ValidationError

from services import entry
from services.settings import (
    BusUnreachable,
    ConfigError,
    DatabaseUnreachable,
    PortUnavailable,
    Settings,
    problems,
)

# Decision: the rest is imported in the commands, so that `chargeops serve` starts quickly; the
# stop signals are caught even earlier, by services.entry (the console script), before any import.
if TYPE_CHECKING:
    from services.db import Database
    from services.wiring import Role

app = typer.Typer(help="ChargeOps: O&M backbone of an EV charging network.", no_args_is_help=True)
token_app = typer.Typer(help="HTTP API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
user_app = typer.Typer(help="HTTP API users and their roles.", no_args_is_help=True)
app.add_typer(user_app, name="user")
T = TypeVar("T")
SERVING = {"serve", "csms", "ticketing"}


@app.callback()
def _signals(ctx: typer.Context) -> None:
    """The serving commands stop cleanly on SIGTERM/SIGINT; the others get the default actions."""
    if ctx.invoked_subcommand in SERVING:
        entry.catch_stop_signals()
    else:
        entry.restore_stop_signals()


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Bad settings exit 2, an unreachable database 1: one line per problem on stderr."""
    try:
        yield
    except ValidationError as exc:
        for line in problems(exc):
            typer.echo(line, err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except (DatabaseUnreachable, BusUnreachable, PortUnavailable) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _serve(role: Role) -> None:
    """Run the process; a SIGTERM or SIGINT since the process began (``services.entry``) or from
    now on stops it cleanly (exit 0), also while the server's modules are still being imported."""
    with _reported():
        settings = Settings()
        from services.wiring import run

        run(settings, role, entry.stop_requested)


@app.command()
def serve() -> None:
    """Run everything in one process: OCPP server, ticketing, HTTP API (migrates first)."""
    _serve("all")


@app.command()
def csms() -> None:
    """Run one OCPP node of a distributed deployment (chargers' sockets; HTTP only for
    /healthz, /readyz, /metrics). Needs a shared database and CHARGEOPS_BUS_URL=nats://..."""
    _serve("csms")


@app.command()
def ticketing() -> None:
    """Run one ticketing replica of a distributed deployment (bus consumers, timers and the
    HTTP API). Needs a shared database and CHARGEOPS_BUS_URL=nats://..."""
    _serve("ticketing")


@app.command()
def migrate() -> None:
    """Apply the database migrations."""
    from services.migrations import upgrade

    with _reported():
        upgrade(Settings().database_url)
    typer.echo("database is at the latest revision")


def _with_db(work: Callable[[Database], Awaitable[T]], *, upgrade_first: bool = False) -> T:
    """Run ``work`` on the configured database; a ``UserError`` exits 1 with its message."""
    from services.api_auth import UserError
    from services.db import Database
    from services.migrations import upgrade

    with _reported():
        settings = Settings()
        if upgrade_first:
            upgrade(settings.database_url)

    async def _run() -> T:
        db = Database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(_run())
    except UserError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="lower-case slug, e.g. dana or tech-042")],
    role: Annotated[str, typer.Option(help="admin, dispatcher, technician or viewer")],
) -> None:
    """Create an API user; its role applies to all of its tokens."""
    from services import api_auth

    user = _with_db(lambda db: api_auth.create_user(db, name, role), upgrade_first=True)
    typer.echo(f"created user {user.name} ({user.role})")


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable the user NAME: all of its tokens are refused from the next request on."""
    from services import api_auth

    _with_db(lambda db: api_auth.disable_user(db, name))
    typer.echo(f"disabled {name}")


@token_app.command("create")
def token_create(
    user: Annotated[str | None, typer.Argument(help="the user the token is for")] = None,
    label: Annotated[str | None, typer.Argument(help="the token is named USER/LABEL")] = None,
    name: Annotated[
        str | None, typer.Option(help="older form: create or reuse user NAME, token NAME/tokenN")
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="with --name: the user's role (default viewer)")
    ] = None,
) -> None:
    """Create an API token; it is printed once (stdout) and stored only as a hash."""
    from services import api_auth

    if name is not None:
        if user is not None or label is not None:
            typer.echo("give either USER LABEL or --name NAME, not both", err=True)
            raise typer.Exit(2)
        new_role = role or "viewer"
        typer.echo(
            _with_db(lambda db: api_auth.create_token(db, name, new_role), upgrade_first=True)
        )
        return
    if role is not None:
        typer.echo("--role goes with --name; a USER's tokens take the user's role", err=True)
        raise typer.Exit(2)
    if user is None or label is None:
        typer.echo("give USER LABEL (or the older form --name NAME --role ROLE)", err=True)
        raise typer.Exit(2)
    token_name, token = _with_db(
        lambda db: api_auth.issue_token(db, user, label), upgrade_first=True
    )
    typer.echo(f"token {token_name}:", err=True)
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(token_name: str) -> None:
    """Revoke the API token called TOKEN_NAME (USER/LABEL, or an older token's name)."""
    from services import api_auth

    if not _with_db(lambda db: api_auth.revoke_token(db, token_name)):
        typer.echo(f"no active token called {token_name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_name}")
