"""``ganglion keys``: create, list and revoke API keys.

These work on the store directly (like Django's ``createsuperuser``), not through the
gateway, so the first admin key can exist before a public gateway will start.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from ganglion.cli.options import DbOption, JsonOption
from ganglion.errors import ConfigError

if TYPE_CHECKING:
    from ganglion.gateway.auth import Role
    from ganglion.store import Store
    from ganglion.store.schema import ApiKeyRow

keys_app = typer.Typer(
    help="API keys: required on a non-loopback bind or with serve --require-keys.",
    short_help="API keys: needed on a non-loopback bind or with --require-keys.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _store(db: str | None) -> Store:
    from ganglion.config import load_settings
    from ganglion.store import Store

    return Store.open(load_settings(database_url=db).database_url)


AdminOption = Annotated[bool, typer.Option("--admin", help="May change the fleet.")]
UserOption = Annotated[bool, typer.Option("--user", help="May use the gateway and read the fleet.")]


@keys_app.command("create")
def create(
    admin: AdminOption = False,
    user: UserOption = False,
    name: Annotated[str | None, typer.Option(help="A label; default ROLE-PREFIX.")] = None,
    db: DbOption = None,
) -> None:
    """Create a key and print it once: it is stored only as a hash and never shown again."""
    from ganglion.gateway.auth import create_key

    role = _role(admin, user)
    store = _store(db)
    try:
        key, row = create_key(store, role, name)
    finally:
        store.close()
    Console(stderr=True).print(
        f"created {row.role} key [bold]{row.name}[/] (prefix {row.prefix}). Copy it now: it is "
        "not shown again. Pass it as --api-key / GANGLION_API_KEY, or 'Authorization: Bearer'.",
        highlight=False,
    )
    print(key)


@keys_app.command("import")
def import_(
    admin: AdminOption = False,
    user: UserOption = False,
    file: Annotated[
        Path | None,
        typer.Option(help="Read the key from this file (a mounted Secret); default stdin."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label; default ROLE-PREFIX.")] = None,
    db: DbOption = None,
) -> None:
    """Store a key made elsewhere (ganglion keys generate, a Kubernetes Secret). Importing a
    key already stored changes nothing, so every replica may run it at start."""
    from ganglion.gateway.auth import import_key

    role = _role(admin, user)
    key = (file.read_text() if file is not None else sys.stdin.read()).strip()
    store = _store(db)
    try:
        row = import_key(store, key, role, name)
    finally:
        store.close()
    err = Console(stderr=True)
    if row.revoked_at is not None:
        err.print(f"key {row.prefix} ({row.name}) was revoked: left revoked", highlight=False)
    elif row.role != role.value:
        err.print(f"key {row.prefix} is stored as a {row.role} key: left so", highlight=False)
    else:
        err.print(f"{row.role} key {row.name} (prefix {row.prefix}) is stored", highlight=False)


@keys_app.command("generate")
def generate() -> None:
    """Print a new key without storing it: for a Secret, to import with ganglion keys import."""
    from ganglion.gateway.auth import new_key

    print(new_key()[1])


@keys_app.command("list")
def list_(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Show every key: prefix, name, role, created, revoked. Never the key or its hash."""
    store = _store(db)
    try:
        rows = store.api_keys()
    finally:
        store.close()
    views = [_view(row) for row in rows]
    if as_json:
        print(json.dumps(views, indent=2))
        return
    console = Console()
    if not views:
        console.print("no API keys yet: create one with 'ganglion keys create --admin'")
        return
    table = Table(box=None, header_style="bold")
    for column in ("PREFIX", "NAME", "ROLE", "CREATED", "REVOKED"):
        table.add_column(column)
    for view in views:
        table.add_row(
            view["prefix"],
            view["name"],
            view["role"],
            _when(view["created_at"]),
            _when(view["revoked_at"]) or "-",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as 'ganglion keys list' shows.")],
    db: DbOption = None,
) -> None:
    """Revoke a key. A running gateway refuses it within a second (GANGLION_KEY_RECHECK_S)."""
    store = _store(db)
    try:
        row = store.revoke_api_key(_prefix_of(prefix))
    finally:
        store.close()
    Console().print(f"revoked {row.role} key {row.name} ({row.prefix})", highlight=False)


def _role(admin: bool, user: bool) -> Role:
    from ganglion.gateway.auth import Role

    if admin == user:
        raise ConfigError(
            "choose the key's role: --admin (may change the fleet) or --user (may use it)"
        )
    return Role.ADMIN if admin else Role.USER


def _prefix_of(given: str) -> str:
    """Accept the prefix alone, ``gk_PREFIX``, or a whole key."""
    given = given.strip()
    if given.startswith("gk_"):
        given = given[3:]
    return given.split("_", 1)[0]


def _view(row: ApiKeyRow) -> dict[str, str | None]:
    return {
        "prefix": row.prefix,
        "name": row.name,
        "role": row.role,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


def _when(stamp: str | None) -> str:
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M") if stamp else ""
