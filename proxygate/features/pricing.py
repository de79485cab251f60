"""Stage: what each request cost at API prices, set on the ``Call`` before usage is recorded.

For an API key that is money spent; for a subscription account it is the API-equivalent
value: what the same traffic would have cost on the API. A model with no price leaves
``call.cost_usd`` None (unknown), never 0 (proxygate/prices).
"""

from __future__ import annotations

from proxygate.call import Call
from proxygate.prices import PriceTable


class Pricing:
    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices

    def on_done(self, call: Call) -> None:
        # The served model: a route may send the client's "sonnet" to another model.
        call.cost_usd = self.prices.cost_usd(call.upstream_model or call.model, call.usage)
