"""Store commands: `proxygate migrate-store` copies the embedded LMDB store into Redis."""

from __future__ import annotations

from typing import Annotated

import typer

from proxygate.cli.app import ConfigOption, app, console, err_console, reported, settings_from
from proxygate.errors import ConfigError
from proxygate.store import LMDBStore


@app.command("migrate-store")
def migrate_store(
    to: Annotated[str, typer.Option("--to", help="The store to copy into: redis.", metavar="BACKEND")],
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="redis://[:password@]host:port/db or rediss:// (default: \\[store] redis_url).",
            metavar="URL",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Copy state, usage rows and the request log from <data_dir> into Redis (safe to run again)."""
    if to != "redis":
        err_console.print(f"error: --to {to!r}: the only target is redis", highlight=False, markup=False)
        raise typer.Exit(2)
    with reported():
        settings = settings_from(config)
        url = redis_url or settings.store.redis_url
        if not url:
            raise ConfigError(
                "migrate-store: no Redis to copy into: pass --redis-url or set [store] redis_url"
            )
        settings = settings_from(config, **{"store.backend": "redis", "store.redis_url": url})  # validates it
        from proxygate.store.redis_store import RedisStore  # redis is imported only when used

        source = LMDBStore(settings.data_dir, settings.usage)
        target = RedisStore(settings.store, settings.usage)
        try:
            copied = target.copy_from(source)
        finally:
            target.close()
            source.close()
    console.print(
        f"state: {copied['state']} keys copied ({copied['state_kept']} already in Redis, kept)\n"
        f"usage: {copied['daily_rows']} daily and {copied['hourly_rows']} hourly rows\n"
        f"request log: {copied['requests']} entries copied",
        highlight=False,
    )
