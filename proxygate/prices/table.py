"""API prices per model, and what a request's usage cost at them.

One idea first: a model with no price has an *unknown* cost, ``None``, never 0; a report shows
it as ``–``. Three sources stack, later ones winning per model: the table shipped in this package
(``prices.toml``: dated, each entry with its source), ``<data_dir>/prices.toml``, and ``[prices]``
in config.toml. Dated snapshots are priced as the model they snapshot
(``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``, ``gpt-4o-2024-08-06`` → ``gpt-4o``,
``models/gemini-2.5-pro`` → ``gemini-2.5-pro``).

Costs use ``ir.Usage``'s accounting, where ``input_tokens`` excludes cache reads and writes
(OpenAI's cached prompt tokens are already split off by the codecs), so each token is priced
once, at its own rate.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from proxygate.config import PriceSettings
from proxygate.errors import ConfigError
from proxygate.wire.ir import Usage

Origin = Literal["shipped", "file", "config"]

PER_TOKENS = 1_000_000
"Prices are quoted in USD per million tokens."

USER_FILE = "prices.toml"
'The user\'s price file, in the data dir: ``[prices."MODEL"]`` tables, as in config.toml.'

# Cache size for model-name lookups: a pool serves a handful of models; past this, start over.
MAX_LOOKUPS = 1024

_RATE_KEYS = ("input", "output", "cache_read", "cache_write", "cache_write_1h")


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_write_1h: float

    def cost_usd(self, usage: Usage) -> float:
        written_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + (usage.cache_write_tokens - written_1h) * self.cache_write
            + written_1h * self.cache_write_1h
        ) / PER_TOKENS


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price, with a dearer tier for long prompts where the provider has one."""

    model: str
    rates: Rates
    provider: str = ""
    origin: Origin = "shipped"
    source: str = ""
    "A URL (shipped), the file it came from, or config.toml."
    date: str = ""
    "The date the price took effect (shipped entries)."
    aliases: tuple[str, ...] = ()
    long_context: Rates | None = None
    long_context_above: int = 0
    "Prompt tokens (input + cache reads + cache writes) past which the whole request costs ``long_context``."

    def rates_for(self, usage: Usage) -> Rates:
        if self.long_context is not None and usage.prompt_tokens > self.long_context_above:
            return self.long_context
        return self.rates

    def cost_usd(self, usage: Usage) -> float:
        return self.rates_for(usage).cost_usd(usage)


class PriceTable:
    """Prices by model name; ``find`` resolves dated and prefixed names."""

    def __init__(self, prices: Iterable[Price]) -> None:
        self._by_name: dict[str, Price] = {}
        for price in prices:
            for name in (price.model, *price.aliases):
                self._by_name[name.lower()] = price
        self._found: dict[str, Price | None] = {}

    def __len__(self) -> int:
        return len(self.prices())

    def prices(self) -> list[Price]:
        """Every entry once, by provider then model."""
        unique = {id(p): p for p in self._by_name.values()}
        return sorted(unique.values(), key=lambda p: (p.provider, p.model))

    def find(self, model: str) -> Price | None:
        """The price that applies to ``model`` (a client's or provider's spelling), or None."""
        if model in self._found:
            return self._found[model]
        price = next((self._by_name[n] for n in candidate_names(model) if n in self._by_name), None)
        if len(self._found) >= MAX_LOOKUPS:
            self._found.clear()
        self._found[model] = price
        return price

    def cost_usd(self, model: str, usage: Usage) -> float | None:
        """What ``usage`` cost at ``model``'s API price; None when the model has no price."""
        price = self.find(model)
        return None if price is None else price.cost_usd(usage)


# Suffixes that name a snapshot of a model, not another model: tried one at a time from the end.
_SNAPSHOT = re.compile(
    r"(?:[-@]\d{8}"  # claude-sonnet-4-5-20250929, Vertex's claude-sonnet-4-5@20250929
    r"|-\d{4}-\d{2}-\d{2}"  # gpt-4o-2024-08-06
    r"|-v\d+(?::\d+)?"  # Bedrock's …-v1:0
    r"|-latest"  # claude-3-5-sonnet-latest, gpt-5-chat-latest
    r"|-(?:preview|exp)(?:-\d{2}-\d{2}(?:-\d{4})?)?"  # gemini-2.5-pro-preview-06-05, gemini-3-pro-preview
    r"|-\d{2}-\d{2}"  # gemini-2.5-flash-lite-06-17
    r"|-\d{3})$"  # gemini-2.0-flash-001
)


def candidate_names(model: str) -> list[str]:
    """``model`` as written, then without provider prefixes and snapshot suffixes, one at a time."""
    name = model.strip().lower()
    names = [name]
    name = name.removeprefix("models/").split("[", 1)[0]  # Claude Code's "…[1m]" context marker
    if "anthropic." in name:  # Bedrock: "anthropic.claude-…", "us.anthropic.claude-…"
        name = name.split("anthropic.", 1)[1]
    name = name.rsplit("/", 1)[-1]  # OpenRouter and the like: "anthropic/claude-sonnet-4.5"
    if name.startswith("claude-"):
        name = re.sub(r"(?<=\d)\.(?=\d)", "-", name)  # claude-sonnet-4.5 → claude-sonnet-4-5
    names.append(name)
    while (shorter := _SNAPSHOT.sub("", name)) != name and shorter:
        name = shorter
        names.append(name)
    return list(dict.fromkeys(names))


# -- loading ---------------------------------------------------------------------------------


def shipped_prices() -> list[Price]:
    """The table shipped in this package."""
    text = resources.files("proxygate.prices").joinpath("prices.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return [_shipped(entry) for entry in data["price"]]


def _shipped(entry: Mapping[str, Any]) -> Price:
    long_context = entry.get("long_context")
    return Price(
        model=entry["model"],
        rates=_rates(entry),
        provider=entry.get("provider", ""),
        origin="shipped",
        source=entry.get("source", ""),
        date=entry.get("date", ""),
        aliases=tuple(entry.get("aliases", ())),
        long_context=None if long_context is None else _rates(long_context),
        long_context_above=0 if long_context is None else int(long_context["above_tokens"]),
    )


def _rates(entry: Mapping[str, Any], base: Rates | None = None) -> Rates:
    """Missing cache prices: the base entry's, else no discount (cache reads/writes as input)."""
    input_usd = float(entry.get("input", 0.0))
    cache_write = entry.get("cache_write")
    if cache_write is None:
        cache_write = base.cache_write if base is not None else input_usd
    cache_read = entry.get("cache_read")
    if cache_read is None:
        cache_read = base.cache_read if base is not None else input_usd
    cache_write_1h = entry.get("cache_write_1h")
    if cache_write_1h is None:
        cache_write_1h = base.cache_write_1h if base is not None else cache_write
    return Rates(
        input=input_usd,
        output=float(entry.get("output", 0.0)),
        cache_read=float(cache_read),
        cache_write=float(cache_write),
        cache_write_1h=float(cache_write_1h),
    )


def overrides(
    prices: Mapping[str, PriceSettings], base: PriceTable, *, origin: Origin, source: str
) -> list[Price]:
    """User entries; each replaces the whole entry it names (and its long-context tier).

    An entry named like a listed model also takes over that model's aliases and dated names;
    one named like a snapshot (``gpt-4o-2024-05-13``) applies to that snapshot alone.
    """
    out = []
    for model, setting in prices.items():
        found = base.find(model)
        values = {k: getattr(setting, k) for k in _RATE_KEYS}
        is_same_model = found is not None and model.lower() == found.model.lower()
        out.append(
            Price(
                model=model,
                rates=_rates(
                    {k: v for k, v in values.items() if v is not None}, None if found is None else found.rates
                ),
                provider=found.provider if found is not None else "",
                origin=origin,
                source=source,
                aliases=found.aliases if found is not None and is_same_model else (),
            )
        )
    return out


def read_price_file(path: Path) -> dict[str, PriceSettings]:
    """``[prices."MODEL"]`` tables of a user price file; a missing file has none.

    Raises:
        ConfigError: the file is unreadable, not TOML, or holds a bad entry (named).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(data) - {"prices"}
    if unknown:
        raise ConfigError(f'{path}: unknown table {sorted(unknown)[0]!r} (expected [prices."MODEL"])')
    table = data.get("prices", {})
    if not isinstance(table, dict):
        raise ConfigError(f'{path}: prices must be tables: [prices."MODEL"]')
    return {model: _price_setting(entry, f"{path}: prices.{model}") for model, entry in table.items()}


def _price_setting(entry: Any, where: str) -> PriceSettings:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table of prices")
    unknown = set(entry) - set(_RATE_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown price (known: {', '.join(_RATE_KEYS)})")
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}.{key}: expected a number ≥ 0 (USD per million tokens), got {value!r}")
    return PriceSettings(**{k: float(v) for k, v in entry.items()})


def load_prices(data_dir: Path, configured: Mapping[str, PriceSettings]) -> PriceTable:
    """Shipped < ``<data_dir>/prices.toml`` < ``[prices]`` in config.toml."""
    shipped = PriceTable(shipped_prices())
    path = data_dir / USER_FILE
    from_file = overrides(read_price_file(path), shipped, origin="file", source=str(path))
    with_file = PriceTable([*shipped.prices(), *from_file])
    from_config = overrides(configured, with_file, origin="config", source="config.toml [prices]")
    return PriceTable([*with_file.prices(), *from_config])
