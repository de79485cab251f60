#!/usr/bin/env bash
# Install proxygate from this checkout as a tool (pipx, else uv, else ~/.proxygate/venv), then
# install (or upgrade) and restart the service with `proxygate service install`, which rolls back
# to the previous unit when the new one does not answer /healthz. Extra arguments go to it
# (--system, --linger). Safe to run again after an update.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if command -v pipx >/dev/null; then
  pipx install --force "$repo" >/dev/null
  exe="$(pipx environment --value PIPX_BIN_DIR)/proxygate"
elif command -v uv >/dev/null; then
  uv tool install --force "$repo" >/dev/null
  exe="$(uv tool dir --bin)/proxygate"
else
  venv="$HOME/.proxygate/venv"
  mkdir -p "$HOME/.proxygate" && chmod 700 "$HOME/.proxygate"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "$repo"
  exe="$venv/bin/proxygate"
fi
exec "$exe" service install "$@"
