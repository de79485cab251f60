"""The pricing stage: the served model's API price of the call's usage, or None (unknown)."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxygate.call import Call
from proxygate.features.pricing import Pricing
from proxygate.prices import load_prices
from proxygate.wire.ir import Format, Usage


def finished_call(asked: str, served: str, usage: Usage) -> Call:
    call = Call("pg_1", Format.anthropic, CIMultiDictProxy(CIMultiDict()), {}, b"", asked, False)
    call.upstream_model, call.usage, call.status = served, usage, 200
    return call


@pytest.fixture
def stage(tmp_path: Path) -> Pricing:
    return Pricing(load_prices(tmp_path, {}))


def test_the_served_model_is_priced_not_the_one_asked(stage: Pricing) -> None:
    """A route sent the client's opus request to haiku: the bill is haiku's."""
    call = finished_call(
        "claude-opus-4-5", "claude-haiku-4-5-20251001", Usage(input_tokens=1_000, output_tokens=100)
    )
    stage.on_done(call)
    assert call.cost_usd == pytest.approx((1_000 * 1.0 + 100 * 5.0) / 1e6)


def test_the_asked_model_is_priced_when_no_account_served(stage: Pricing) -> None:
    call = finished_call("claude-opus-4-5", "", Usage())
    stage.on_done(call)
    assert call.cost_usd == 0.0


def test_a_model_without_a_price_leaves_the_cost_unknown(stage: Pricing) -> None:
    call = finished_call("my-model", "my-model", Usage(input_tokens=1_000))
    stage.on_done(call)
    assert call.cost_usd is None
