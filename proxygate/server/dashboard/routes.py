"""Every dashboard route, registered by one call from server/app.py."""

from __future__ import annotations

from aiohttp import web

from proxygate.server.dashboard import api, config_edit, logins, openapi, pages, traffic


def add_routes(app: web.Application) -> None:
    pages.add_routes(app)  # /, the pages, /login, /logout, /static/, /favicon.ico
    api.add_routes(app)  # account actions, add key, config, login links
    config_edit.add_routes(app)  # POST /admin/api/config/routing (config.toml, tomlkit)
    logins.add_routes(app)  # ChatGPT / Claude logins started from the Add account page
    traffic.add_routes(app)  # GET /admin/api/traffic/stream
    openapi.add_routes(app)  # GET /admin/api/openapi.json
