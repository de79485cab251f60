"""The dashboard's pages: server-rendered shells, filled by /static/dashboard.js from the admin API.

Every page but the login needs a session (else a redirect to ``/login``). GET never changes
state: logging in, out and in by a one-time link are POSTs (the link's page posts its code).
The Setup page is rendered whole here; the other pages' data comes from ``/admin/api`` calls
made with the session cookie and, for changes, the page's CSRF token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from html import escape
from importlib.resources import files
from urllib.parse import quote

from aiohttp import web

from proxygate.pool.catalog import API_KEY_PROVIDERS
from proxygate.server.admin import ADMIN_TOKEN, ADMIN_TOKEN_FILE
from proxygate.server.dashboard.sessions import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    SESSIONS,
    Session,
    Sessions,
    session_of,
)
from proxygate.server.dashboard.setup import setup_main
from proxygate.server.guard import log_rejection
from proxygate.server.keys import SETTINGS

STATIC_DIR = files("proxygate.server") / "static"

PAGES: tuple[tuple[str, str, str], ...] = (
    ("/", "pool", "Pool"),
    ("/add", "add", "Add account"),
    ("/traffic", "traffic", "Traffic"),
    ("/usage", "usage", "Usage & cost"),
    ("/routing", "routing", "Routing"),
    ("/setup", "setup", "Setup"),
)
"(path, page id, navigation label); Tenants, Guardrails and Capture pages slot in here."

# A strict policy: our own scripts and styles only, no inline script, nothing framed.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _head(title: str, csrf: str = "") -> str:
    csrf_meta = f'<meta name="csrf-token" content="{escape(csrf)}">' if csrf else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"{csrf_meta}<title>{escape(title)} · proxygate</title>"
        '<link rel="icon" href="/favicon.ico" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script type="module" src="/static/dashboard.js"></script></head>'
    )


def page_shell(page: str, title: str, session: Session, main: str) -> str:
    current = ' aria-current="page"'
    links = "".join(
        f'<a href="{path}"{current if pid == page else ""}>{escape(label)}</a>' for path, pid, label in PAGES
    )
    return (
        f'{_head(title, session.csrf_token)}<body data-page="{page}">'
        '<a class="skip" href="#main">Skip to content</a>'
        '<header class="top"><span class="brand">proxygate</span>'
        f'<nav aria-label="Main">{links}</nav>'
        '<form method="post" action="/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{escape(session.csrf_token)}">'
        '<button type="submit">Log out</button></form></header>'
        f'<main id="main" tabindex="-1"><h1>{escape(title)}</h1>'
        '<p id="status" role="status" aria-live="polite"></p>'
        f"{main}</main></body></html>"
    )


POOL_MAIN = (
    '<section aria-label="Accounts" id="accounts" class="cards"><p>Loading…</p></section>'
    '<section id="invalid" aria-label="Files that failed to load"></section>'
    '<dialog id="confirm" aria-labelledby="confirm-title"><form method="dialog">'
    '<h2 id="confirm-title">Delete account?</h2><p id="confirm-text"></p>'
    '<div class="row"><button value="cancel" type="submit">Cancel</button>'
    '<button value="confirm" type="submit" class="danger" id="confirm-ok">Delete</button></div>'
    "</form></dialog>"
)

ADD_MAIN = (
    '<section aria-labelledby="key-title"><h2 id="key-title">Add an API key</h2>'
    '<form id="add-key" class="form" autocomplete="off">'
    '<label>Provider <select name="provider" required id="provider">{providers}</select></label>'
    '<label>API key <input name="api_key" type="password" required autocomplete="off" spellcheck="false"></label>'
    '<label>Account id <input name="id" placeholder="default: the provider name"></label>'
    '<label>Base URL <input name="base_url" type="url" placeholder="default: the provider\'s"></label>'
    '<label>Models <input name="models" placeholder="comma-separated globs, e.g. claude-*"></label>'
    '<label>Formats <input name="formats" placeholder="anthropic, chat, responses, gemini"></label>'
    '<label>Weight <input name="weight" type="number" step="any" min="0" placeholder="1"></label>'
    '<label>Priority <input name="priority" type="number" step="1" placeholder="0"></label>'
    '<button type="submit">Add key</button></form>'
    '<p class="hint">The key is written to a 0600 file in the pool and never shown again.</p></section>'
    '<section aria-labelledby="login-title"><h2 id="login-title">Subscriptions</h2>'
    "<p>Sign in with a ChatGPT (Plus, Pro, Team) or Claude (Pro, Max) account: the same logins as "
    "<code>proxygate add-account</code> and <code>proxygate add-claude-account --login</code>.</p>"
    '<div class="actions"><button type="button" data-login="chatgpt">Log in with ChatGPT</button>'
    '<button type="button" data-login="claude">Log in with Claude</button></div>'
    '<div id="login-steps" hidden><p id="login-text"></p>'
    '<p><a id="login-link" target="_blank" rel="noopener noreferrer" href="#">Open the sign-in page</a></p>'
    '<form id="login-paste" class="form">'
    "<label>Paste the code shown after signing in (or the address the browser ended on) "
    '<input name="code" autocomplete="off" spellcheck="false" required></label>'
    '<label>Email (only if Claude does not say which account) <input name="email" type="email" autocomplete="off"></label>'
    '<button type="submit">Finish login</button></form></div></section>'
)

TRAFFIC_MAIN = (
    '<form id="filters" class="filters" role="search" aria-label="Filter requests">'
    '<label>Account <input name="account" autocomplete="off"></label>'
    '<label>Model <input name="model" autocomplete="off"></label>'
    '<label>Status <select name="status"><option value="">any</option><option value="ok">2xx</option>'
    '<option value="error">errors</option></select></label></form>'
    '<p id="feed-state" class="hint">Connecting to the live feed…</p>'
    '<div class="scroll"><table id="traffic"><caption class="sr-only">Requests, newest first</caption>'
    "<thead><tr><th scope=col>Time</th><th scope=col>Request</th><th scope=col>Format</th>"
    "<th scope=col>Model</th><th scope=col>Account</th><th scope=col>Route</th><th scope=col>Tries</th>"
    "<th scope=col>Status</th><th scope=col>First byte</th><th scope=col>Total</th>"
    "<th scope=col>Tokens</th><th scope=col>Cost</th></tr></thead><tbody></tbody></table></div>"
)

USAGE_MAIN = (
    '<form id="usage-form" class="filters" aria-label="Usage period">'
    '<label>Period <select name="since"><option value="24h">last 24 hours</option>'
    '<option value="7d" selected>7 days</option><option value="30d">30 days</option></select></label>'
    '<label>Group by <select name="by"><option value="account">account</option><option value="model">model</option>'
    '<option value="route">route</option><option value="format">client format</option></select></label>'
    '<button type="button" id="csv">Export CSV</button></form>'
    '<section id="totals" aria-label="Totals"></section>'
    '<section aria-labelledby="by-time"><h2 id="by-time">Over time</h2><div id="chart-time" class="chart"></div></section>'
    '<section aria-labelledby="by-group"><h2 id="by-group">By group</h2><div id="chart-group" class="chart"></div>'
    '<div class="scroll"><table id="usage-rows"><thead></thead><tbody></tbody></table></div></section>'
)

ROUTING_MAIN = (
    '<section aria-labelledby="configs-title"><h2 id="configs-title">Routing configs</h2>'
    '<div id="routes"></div></section>'
    '<section aria-labelledby="rules-title"><h2 id="rules-title">Aliases and budgets</h2>'
    '<div id="rules"></div></section>'
    '<section aria-labelledby="edit-title"><h2 id="edit-title">Edit aliases and budgets in config.toml</h2>'
    '<form id="aliases-form" class="form">'
    "<label>Aliases, one per line: <code>client model = pool model</code>"
    '<textarea name="aliases" rows="5" spellcheck="false"></textarea></label>'
    '<button type="submit">Save aliases</button></form>'
    '<h2 id="budget-title">Set an account\'s budget in config.toml</h2>'
    '<form id="budget-form" class="form" aria-labelledby="budget-title">'
    '<label>Account id <input name="account" required autocomplete="off"></label>'
    '<label>Dollars per day <input name="daily_usd" type="number" min="0" step="any" placeholder="no limit"></label>'
    '<label>Dollars per month <input name="monthly_usd" type="number" min="0" step="any" placeholder="no limit"></label>'
    '<label>Tokens per day <input name="daily_tokens" type="number" min="0" step="1" placeholder="no limit"></label>'
    '<label>Tokens per month <input name="monthly_tokens" type="number" min="0" step="1" placeholder="no limit"></label>'
    '<button type="submit">Save budget</button></form>'
    '<p class="hint">Written to config.toml with its comments kept, checked before writing, the old file '
    "kept as config.toml.bak. [routing] aliases and active and [budgets] apply at once (a budget left "
    "empty is removed); other sections of the file apply when the server starts again.</p></section>"
)

PROVIDER_OPTIONS = "".join(f'<option value="{escape(p)}">{escape(p)}</option>' for p in API_KEY_PROVIDERS)

MAINS = {
    "pool": POOL_MAIN,
    "add": ADD_MAIN,
    "traffic": TRAFFIC_MAIN,
    "usage": USAGE_MAIN,
    "routing": ROUTING_MAIN,
}


def _to_login(request: web.Request) -> web.Response:
    return web.Response(status=303, headers={"location": f"/login?next={quote(request.path_qs, safe='')}"})


def page_handler(page: str, title: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        if session is None:
            return _to_login(request)
        if page == "setup":
            main = setup_main(request)
        elif page == "add":
            main = ADD_MAIN.replace("{providers}", PROVIDER_OPTIONS)
        else:
            main = MAINS[page]
        return _html(page_shell(page, title, session, main))

    return handler


def _safe_next(target: str) -> str:
    """Only a path on this server (``//evil.example`` and ``https://…`` are not)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def login_page(next_path: str = "/", code: str = "", error: str = "") -> str:
    token_file = f"&lt;data_dir&gt;/{ADMIN_TOKEN_FILE}"
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    if code:  # a one-time link: dashboard.js submits this form at once
        fields = f'<input type="hidden" name="code" value="{escape(code)}">'
        intro = "<p>Logging in with the one-time link…</p>"
        button = '<button type="submit">Log in</button>'
    else:
        fields = (
            '<label for="token">Admin token</label>'
            '<input id="token" name="token" type="password" required autocomplete="current-password" autofocus>'
        )
        intro = (
            "<p>Paste the admin token: <code>admin_token</code> in config.toml, or the token "
            f"proxygate generated in <code>{token_file}</code>. Or run "
            "<code>proxygate dashboard</code> to open a logged-in window.</p>"
        )
        button = '<button type="submit">Log in</button>'
    return (
        f'{_head("Log in")}<body data-page="login"><main id="main" class="login">'
        f"<h1>proxygate</h1>{intro}{alert}"
        f'<form method="post" action="/login" id="login-form" class="form">'
        f'<input type="hidden" name="next" value="{escape(_safe_next(next_path))}">'
        f"{fields}{button}</form></main></body></html>"
    )


async def login_form(request: web.Request) -> web.Response:
    if session_of(request) is not None and not request.query.get("code"):
        return web.Response(status=303, headers={"location": _safe_next(request.query.get("next", "/"))})
    return _html(login_page(request.query.get("next", "/"), request.query.get("code", "")))


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    next_path = _safe_next(str(form.get("next", "/")))
    sessions: Sessions = request.app[SESSIONS]
    token, code = str(form.get("token", "")).strip(), str(form.get("code", "")).strip()
    if code:
        is_ok = sessions.redeem_login_code(code)
        failure = "This login link was used already or has expired: run `proxygate dashboard` again."
    else:
        is_ok = bool(token) and hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode())
        failure = "Wrong admin token."
    if not is_ok:
        log_rejection(request, 401, "dashboard login refused")
        return _html(login_page(next_path, error=failure), status=401)
    session = sessions.create()
    response = web.Response(status=303, headers={"location": next_path, "cache-control": "no-store"})
    response.set_cookie(
        SESSION_COOKIE, session.id, max_age=int(SESSION_TTL_S), httponly=True, samesite="Strict", path="/"
    )
    return response


async def logout(request: web.Request) -> web.Response:
    session = session_of(request)
    form = await request.post()
    if session is not None:
        if not session.accepts_csrf(str(form.get("csrf", ""))):
            log_rejection(request, 403, "dashboard logout without its CSRF token")
            return _html(login_page(error="Log out from the dashboard's own button."), status=403)
        request.app[SESSIONS].end(session.id)
    response = web.Response(status=303, headers={"location": "/login"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        str(STATIC_DIR / "favicon.svg"),
        headers={"content-type": "image/svg+xml", "cache-control": "max-age=86400"},
    )


def add_routes(app: web.Application) -> None:
    # Signed with the admin token, so every worker and instance holding it checks the same cookie.
    app[SESSIONS] = Sessions(lambda: app[ADMIN_TOKEN], app[SETTINGS].data_dir)
    for path, page, label in PAGES:
        app.router.add_get(path, page_handler(page, "Pool" if page == "pool" else label))
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", str(STATIC_DIR), append_version=False)
