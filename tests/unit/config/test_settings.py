from __future__ import annotations

from pathlib import Path

import pytest

from proxygate.config import load_settings
from proxygate.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path) -> None:
    s = load_settings(None, {}, cwd=tmp_path)
    assert (s.addr, s.host, s.port, s.log_level, s.max_body_mb) == (
        "127.0.0.1:19527",
        "127.0.0.1",
        19527,
        "info",
        32.0,
    )
    assert (s.timeouts.connect_s, s.timeouts.first_byte_s, s.timeouts.idle_s) == (10.0, 120.0, 300.0)
    assert s.routing.priority == "account-first"
    assert s.pool_dir == Path("~/.proxygate/pool").expanduser()
    assert s.config_path is None


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'addr = "127.0.0.1:1000"\nlog_level = "debug"\n[timeouts]\nconnect_s = 3\n')
    s = load_settings(
        path, {"PROXYGATE_LOG_LEVEL": "warn", "PROXYGATE_TIMEOUTS_IDLE_S": "9"}, {"addr": "127.0.0.1:2000"}
    )
    assert (s.addr, s.log_level, s.timeouts.connect_s, s.timeouts.idle_s) == (
        "127.0.0.1:2000",
        "warn",
        3.0,
        9.0,
    )


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path: Path) -> None:
    path = write(tmp_path, 'pool_dir = "p"\ndata_dir = "../d"\n')
    s = load_settings(None, {"PROXYGATE_CONFIG": str(path)}, cwd=Path("/"))
    assert (s.pool_dir, s.data_dir, s.config_path) == (tmp_path / "p", tmp_path.parent / "d", path)


def test_search_order_finds_cwd_config(tmp_path: Path) -> None:
    write(tmp_path, 'addr = "127.0.0.1:7"\n')
    assert load_settings(None, {}, cwd=tmp_path).addr == "127.0.0.1:7"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('max_body_mb = "big"\n', {}, r"^max_body_mb \(.*config.toml\): expected a number, got 'big'$"),
        (
            "",
            {"PROXYGATE_LOG_LEVEL": "loud"},
            r"^log_level \(env PROXYGATE_LOG_LEVEL\): 'loud' is not one of debug, info, warn, error$",
        ),
        (
            '[routing]\npriority = "random"\n',
            {},
            r"^routing.priority \(.*\): 'random' is not one of account-first, apikey-first$",
        ),
        ("nonsense = 1\n", {}, r"^nonsense \(.*config.toml\): unknown setting$"),
        ('addr = "localhost"\n', {}, r"^addr: 'localhost' is not HOST:PORT$"),
        (
            '[routing]\nactive = "nope"\n',
            {},
            r"^routing.active: 'nope' is not one of the routing configs \(default\)$",
        ),
        ("addr = [\n", {}, r"config.toml: "),
    ],
)
def test_bad_values_name_key_and_source(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), env)


def test_routing_configs_and_aliases_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[routing.aliases]\n"gpt-5-codex" = "claude-sonnet-4-5"\n'
        '[routing.configs.cheap]\nstrategy = "priority"\ntiers.haiku = { accounts = ["deepseek-1"], model = "deepseek-chat" }\n',
    )
    routing = load_settings(path, {}).routing
    assert routing.aliases == {"gpt-5-codex": "claude-sonnet-4-5"}
    assert sorted(routing.configs) == ["cheap", "default"]
    assert routing.configs["cheap"].tiers["haiku"].accounts == ("deepseek-1",)
    assert routing.configs["cheap"].tiers["haiku"].model == "deepseek-chat"


def test_config_example_loads_and_documents_every_setting() -> None:
    import dataclasses

    from proxygate.config import Settings

    example = Path(__file__).parents[3] / "config.toml.example"
    load_settings(example, {})

    def keys(obj: object, prefix: str = "") -> list[str]:
        found = []
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            if f.name == "config_path":
                continue
            value = getattr(obj, f.name)
            found.append(prefix + f.name)
            if dataclasses.is_dataclass(value):
                found += keys(value, prefix + f.name + ".")
        return found

    text = example.read_text()

    def documented(key: str) -> bool:  # `name =`, or a table `[key]` / `[key.…]`
        return f"{key.rsplit('.', 1)[-1]} =" in text or f"[{key}]" in text or f"[{key}." in text

    assert [k for k in keys(Settings()) if not documented(k)] == []
