"""OAuth logins for subscription accounts: PKCE browser (loopback or copied code), device code.

``tokens`` speaks to the token endpoints; ``pkce`` builds authorize URLs and catches the
callback; ``device`` runs the ChatGPT device-code flow; ``credentials`` turns other tools'
credential files (Claude Code, Codex CLI) into pool files.
"""
