"""API prices per model (shipped, dated, overridable) and the cost of a request's usage.

Pure: imports only ``proxygate.config`` and ``proxygate.wire.ir``, so the pricing stage, the
broker's dollar budgets and the usage reports all price tokens the same way.
"""

from proxygate.prices.table import (
    USER_FILE,
    Price,
    PriceTable,
    Rates,
    candidate_names,
    load_prices,
    read_price_file,
    shipped_prices,
)

__all__ = [
    "USER_FILE",
    "Price",
    "PriceTable",
    "Rates",
    "candidate_names",
    "load_prices",
    "read_price_file",
    "shipped_prices",
]
