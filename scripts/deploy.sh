#!/usr/bin/env bash
# Install proxygate from this checkout into ~/.proxygate/venv and (re)start it as a service:
# a systemd user unit on Linux, a launchd agent on macOS. Safe to run again after an update.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
home_dir="$HOME/.proxygate"
mkdir -p "$home_dir" && chmod 700 "$home_dir"
[ -x "$home_dir/venv/bin/python" ] || python3 -m venv "$home_dir/venv"
"$home_dir/venv/bin/pip" install -q --upgrade "$repo"
case "$(uname -s)" in
  Linux)
    unit_dir="$HOME/.config/systemd/user"
    mkdir -p "$unit_dir"
    cp "$repo/packaging/proxygate.user.service" "$unit_dir/proxygate.service"
    systemctl --user daemon-reload
    systemctl --user enable proxygate >/dev/null
    systemctl --user restart proxygate
    echo "proxygate restarted: systemctl --user status proxygate; logs: journalctl --user -u proxygate -f"
    ;;
  Darwin)
    plist="$HOME/Library/LaunchAgents/dev.proxygate.plist"
    mkdir -p "$(dirname "$plist")"
    launchctl unload "$plist" 2>/dev/null || true
    sed "s#HOME_DIR#$HOME#g" "$repo/packaging/dev.proxygate.plist" > "$plist"
    launchctl load -w "$plist"
    echo "proxygate restarted: logs in $home_dir/proxygate.log"
    ;;
  *) echo "no service manager known for $(uname -s); run: $home_dir/venv/bin/proxygate serve" >&2; exit 1 ;;
esac
"$home_dir/venv/bin/proxygate" status || true
