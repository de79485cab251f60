"""The Setup page: every client's snippet (server/snippets.py) with this server's URL, a copy button each."""

from __future__ import annotations

from html import escape

from aiohttp import web

from proxygate.server.keys import SETTINGS
from proxygate.server.snippets import CLIENTS, KEY_ENV, all_snippets, needs_token


def base_url_seen(request: web.Request) -> str:
    """The URL this browser reached us at (its Host passed the guard): what a local client uses too."""
    return f"http://{request.host}"


def setup_main(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    base_url = base_url_seen(request)
    needs_key = needs_token(settings)
    key_line = (
        f"Clients must send the proxy token: the snippets read it from <code>${KEY_ENV}</code> "
        "(set it to <code>proxy_token</code> from config.toml)."
        if needs_key
        else "This server checks no client key: where a client insists on one, any value works."
    )
    parts = [
        f'<p>Server URL: <code id="base-url">{escape(base_url)}</code></p><p>{key_line}</p>',
        '<nav aria-label="Clients" class="toc">',
        *(f'<a href="#client-{cid}">{escape(name)}</a>' for cid, name in CLIENTS.items()),
        "</nav>",
    ]
    current = ""
    for n, snippet in enumerate(all_snippets(base_url, needs_key)):
        if snippet.client != current:
            if current:
                parts.append("</section>")
            current = snippet.client
            parts.append(
                f'<section class="client" id="client-{snippet.client}" aria-labelledby="h-{snippet.client}">'
                f'<h2 id="h-{snippet.client}">{escape(CLIENTS[snippet.client])}</h2>'
            )
        where = "run in a shell or put in your profile" if snippet.file == "shell" else snippet.file
        parts.append(
            f'<div class="snippet"><h3 id="s-{n}">{escape(snippet.title)}</h3>'
            f'<p class="hint">Goes in: <code>{escape(where)}</code>'
            f"{' — ' + escape(snippet.note) if snippet.note else ''}</p>"
            f'<pre><code id="code-{n}" class="lang-{escape(snippet.language)}">{escape(snippet.text)}</code></pre>'
            f'<button type="button" class="copy" data-copy="code-{n}" aria-describedby="s-{n}">Copy</button></div>'
        )
    if current:
        parts.append("</section>")
    return "".join(parts)
