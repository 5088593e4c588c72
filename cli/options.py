"""Where the API is and which token to send: options shared by every client command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli.api import Trainyard
from cli.client import ApiClient
from shared.config import get_settings

F = TypeVar("F", bound=Callable[..., Any])

url_option = click.option("--url", envvar="TRAINYARD_URL", help="API base URL.")
token_option = click.option("--token", envvar="TRAINYARD_TOKEN", help="Bearer token.")


def client_options(func: F) -> F:
    """--url and --token (TRAINYARD_URL / TRAINYARD_TOKEN)."""
    return url_option(token_option(func))


def make_api(url: str | None, token: str | None) -> Trainyard:
    """The typed API (cli.api) over make_client's transport."""
    return Trainyard(make_client(url, token))


def make_client(url: str | None, token: str | None) -> ApiClient:
    """A client for `url` (default: the local service) with `token` (default: home/token)."""
    settings = get_settings()
    if token is None:
        token_file = settings.home / "token"
        token = token_file.read_text().strip() if token_file.exists() else None
    if not token:
        raise click.ClickException(
            f"no token: set TRAINYARD_TOKEN, pass --token, or run where "
            f"{settings.home / 'token'} exists (trainyard serve --demo writes it)"
        )
    return ApiClient(url or settings.base_url(), token)
