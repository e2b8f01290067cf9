"""The ``chargeops`` command."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from services.settings import Settings

app = typer.Typer(help="ChargeOps: O&M backbone of an EV charging network.", no_args_is_help=True)
token_app = typer.Typer(help="HTTP API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command()
def serve() -> None:
    """Run everything in one process: OCPP server, ticketing, HTTP API (migrates first)."""
    from services.wiring import run

    run(Settings())


@app.command()
def migrate() -> None:
    """Apply the database migrations."""
    from services.migrations import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    typer.echo("database is at the latest revision")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="who or what uses the token")],
    role: Annotated[str, typer.Option(help="admin, dispatcher, technician or viewer")] = "viewer",
) -> None:
    """Create an API token; it is shown once and stored only as a hash."""
    from services.api_auth import create_token
    from services.db import Database
    from services.migrations import upgrade

    settings = Settings()
    upgrade(settings.database_url)

    async def _create() -> str:
        db = Database(settings.database_url)
        try:
            return await create_token(db, name, role)
        finally:
            await db.dispose()

    typer.echo(asyncio.run(_create()))


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke the API token called NAME."""
    from services.api_auth import revoke_token
    from services.db import Database

    settings = Settings()

    async def _revoke() -> bool:
        db = Database(settings.database_url)
        try:
            return await revoke_token(db, name)
        finally:
            await db.dispose()

    if not asyncio.run(_revoke()):
        typer.echo(f"no active token called {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")
