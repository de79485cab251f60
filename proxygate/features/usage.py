"""Stage: record every request's outcome and usage in the store, and log one line for it."""

from __future__ import annotations

import logging

from proxygate.call import Call
from proxygate.store.base import Store, UsageRecord

log = logging.getLogger("proxygate.request")


class UsageRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store

    def on_done(self, call: Call) -> None:
        u = call.usage
        # Refused before an account was chosen too: the request log shows it (the store keeps
        # such records out of the usage rows).
        self.store.record(
            UsageRecord(
                request_id=call.request_id,
                ts=call.wall_started,
                account_id=call.account_id,
                model=call.upstream_model or call.model,
                client_format=call.fmt.value,
                upstream_format=(call.upstream_format or call.fmt).value,
                status=call.status,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                latency_ms=round(call.elapsed_ms, 1),
                error_class=call.error_class,
                is_stream=call.is_stream,
                tenant=call.tenant,
                model_asked=call.model,
                route=call.route,
                attempts=call.attempts,
                first_byte_ms=round(call.first_byte_ms, 1),
                cost_usd=call.cost_usd,
                guardrails=call.redactions,
            )
        )
        level = logging.INFO if call.status < 400 else logging.WARNING
        log.log(
            level,
            "%s %s %s tenant=%s model=%s account=%s status=%d in=%d out=%d cache_r=%d cache_w=%d %.0fms%s",
            call.request_id,
            call.fmt.value,
            "stream" if call.is_stream else "json",
            call.tenant or "-",
            call.model,
            call.account_id or "-",
            call.status,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            call.elapsed_ms,
            f" error={call.error_class}: {call.error}" if call.error_class else "",
        )
