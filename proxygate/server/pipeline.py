"""The way of one request, top to bottom (DESIGN.md): stages → broker → provider → relay → after.

    default_stages()   the feature set, in order, on one screen
    Pipeline.handle    run the stages, then forward with failover, then the stages' on_done
    Pipeline._forward  acquire a lease; send; on 429/529/5xx/reset/a cut answer before the
                       first byte, release with that outcome and try the next account
    Pipeline._relay    same format: bytes untouched, usage sniffed on the side;
                       other format: upstream events → IR → the client's format, chunk by chunk

Every error the client sees is rendered in its own wire format and carries the request id.
What the upstream says about itself (error bodies, messages, cooldown reasons) is scrubbed of
the account's credentials before it is logged, stored or returned (issue 10 §5).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from proxygate.broker import Ask, Broker, Lease, Outcome, conversation
from proxygate.broker.fairshare import FairShare, Verdict
from proxygate.broker.state import refusal_reason
from proxygate.call import Call
from proxygate.config import Settings
from proxygate.errors import (
    AllAccountsBusy,
    ClientError,
    ConnectionLost,
    ProxyError,
    ResponseLimit,
    TenantLimitReached,
    UpstreamError,
)
from proxygate.features.capture import dataset_capture
from proxygate.features.limits import ModelLimits
from proxygate.features.live import LiveFeed
from proxygate.features.metrics import RequestMetrics, mark_counted
from proxygate.features.pricing import Pricing
from proxygate.features.tenants import TenantBook, TenantLimits
from proxygate.features.usage import UsageRecorder
from proxygate.pool.records import Account
from proxygate.prices import load_prices
from proxygate.providers.oauth import TokenKeeper
from proxygate.providers.signatures import is_signature_error, strip_thinking
from proxygate.providers.subscriptions import adjust_body, explain_refusal
from proxygate.providers.upstream import build_request, response_headers, scrub, scrub_bytes
from proxygate.server import convert
from proxygate.server.collect import collected_response
from proxygate.server.relay import (
    Upstream,
    answered,
    open_upstream,
    read_answer,
    relay_bytes,
    retry_after_s,
    start_response,
)
from proxygate.store.base import Store
from proxygate.store.secrets import Vault
from proxygate.wire.errors import client_status, error_body
from proxygate.wire.ir import Format, Usage
from proxygate.wire.usage import UsageSniffer

log = logging.getLogger("proxygate.pipeline")

# Upstream error bodies are small; of a runaway one only this much is read.
MAX_ERROR_BODY = 64 * 1024


def default_stages(settings: Settings, store: Store, tenants: TenantBook | None = None) -> list[Any]:
    """The feature set, in order. A stage is a plain class; the runner calls only the hooks it
    defines: ``on_request(call)`` before the broker (then, awaited, ``on_admit(call)``: admission
    that asks the shared store), ``on_done(call)`` after the answer."""
    book = tenants or TenantBook(settings)
    # Present when on globally or for some tenant at start; then each request asks its tenant.
    guarding: list[Any] = []
    if settings.guardrails.enabled or book.any_on("guardrails"):
        # The detectors' data (phone number metadata, name lists) is ~15 MB: loaded only when used.
        from proxygate.features.guardrails import guardrails

        guarding = guardrails(
            settings.guardrails,
            settings.data_dir,
            store,
            switch=book.switch("guardrails", settings.guardrails.enabled),
            tenant_on=book.any_on("guardrails"),
        )
    capturing = dataset_capture(
        settings.capture,
        switch=book.switch("capture", settings.capture.enabled),
        tenant_on=book.any_on("capture"),
    )
    book.present = frozenset(name for name, on in (("guardrails", guarding), ("capture", capturing)) if on)
    return [
        Pricing(load_prices(settings.data_dir, settings.prices)),  # sets call.cost_usd
        TenantLimits(book, store if settings.store.backend == "redis" else None),  # rpm shared by instances
        ModelLimits(settings.models, settings.routing.aliases),  # [models."<glob>"]: shape to fit
        *guarding,  # redact in, restore out; none when off everywhere
        UsageRecorder(store),
        RequestMetrics(settings.routing),  # after pricing: reads call.cost_usd
        *capturing,  # successes as fine-tuning records; none when off everywhere
        LiveFeed(),  # the dashboard's Traffic page; costs one truth test with no one watching
    ]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        broker: Broker,
        session: aiohttp.ClientSession,
        store: Store,
        *,
        tenants: TenantBook | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.session = session
        self.store = store
        vault = Vault(settings.secrets, settings.data_dir)
        self.keeper = TokenKeeper(settings.oauth, session, vault=vault, store=store)
        "Fresh OAuth tokens: one refresh at a time per account, on disk before use (providers/oauth)."
        self.signature_retries = 0
        "Requests sent once more without thinking blocks another account had signed (/metrics)."
        self.stages = default_stages(settings, store, tenants)
        self._on_request = [s.on_request for s in self.stages if hasattr(s, "on_request")]
        self._on_done = [s.on_done for s in self.stages if hasattr(s, "on_done")]
        self._on_admit = [s.on_admit for s in self.stages if hasattr(s, "on_admit")]
        "Async admission after ``on_request`` (the shared store's tenant rpm)."
        store.report_leases(broker.leases)  # the store's heartbeat publishes our in-flight counts
        self._peers: Mapping[str, int] = {}
        "The other instances' leases as last given to the broker (the store's heartbeat snapshot)."
        self.fair = FairShare()
        "Tenants' shares of subscription windows (broker/fairshare.py); idle with no tenants."
        if tenants is not None:
            tenants.on_change(lambda book: self.fair.set_shares(book.shares()))

    async def handle(self, request: web.Request, call: Call) -> web.StreamResponse:
        try:
            for hook in self._on_request:
                hook(call)
            for admit in self._on_admit:
                await admit(call)
            return await self._forward(request, call)
        except ProxyError as exc:
            return self.error_response(call, exc)
        except asyncio.CancelledError:
            call.status, call.error_class, call.error = 499, "cancelled", "client disconnected"
            raise
        finally:
            mark_counted()
            # After the answer has left: aiohttp writes a returned response before this task
            # yields, and recording, the log line and metrics (~40 µs) need not delay it.
            asyncio.get_running_loop().call_soon(self._done, call)

    def _done(self, call: Call) -> None:
        """The stages' ``on_done``, in order; one that fails is logged and the others still run."""
        for hook in self._on_done:
            try:
                hook(call)
            except Exception:
                log.exception("%s: %s failed", call.request_id, getattr(hook, "__qualname__", hook))

    def _follow_peers(self) -> None:
        """The other instances' leases into the broker's scoring, when the heartbeat brought new ones."""
        peers = self.store.peer_leases()
        if peers is not self._peers and (peers or self._peers):  # a new snapshot once a second at most
            self._peers = peers
            self.broker.set_peer_leases(peers)

    def error_response(
        self,
        call: Call,
        exc: ProxyError,
        *,
        retry_after: float | None = None,
        account: Account | None = None,
    ) -> web.Response:
        """The client's error body. ``account``: the one whose upstream words the message
        quotes; its credentials are masked again after the guardrails' restoring."""
        status = client_status(call.fmt, exc.error_class, exc.status)
        call.status, call.error_class, call.error = status, call.error_class or exc.error_class, exc.message
        headers = {"x-proxygate-request-id": call.request_id}
        if call.route:  # the broker was asked: say which routing config answered
            headers["x-proxygate-route"] = self.broker.route_label(
                failover=call.attempts > 1, name=call.route
            )
        retry = retry_after if retry_after is not None else getattr(exc, "retry_after_s", None)
        if retry is not None:
            headers["retry-after"] = str(max(int(retry + 0.999), 1))
        if (status < 500 and status not in (408, 409, 429)) or isinstance(exc, ResponseLimit):
            # Both SDKs honour it: retrying cannot fix a 4xx, nor an answer past our caps.
            headers["x-should-retry"] = "false"
        message = exc.message
        if call.output_transform is not None:  # the client never sees a replacement it did not send
            message = call.output_transform.text(message)
            if account is not None:
                message = scrub(account, message)
        body = error_body(call.fmt, exc.error_class, message, status=status, request_id=call.request_id)
        return web.Response(status=status, body=body, headers=headers, content_type="application/json")

    # -- failover loop ---------------------------------------------------------------------

    async def _forward(self, request: web.Request, call: Call) -> web.StreamResponse:
        call.conversation, follows_pin = conversation(call.fmt, call.headers, call.body)
        self._follow_peers()
        call.route = call.route or self.broker.route_name  # a tenant's route, else the active one
        ask = Ask(call.model, call.fmt, call.conversation, follows_pin, route=call.route)
        held, over_share = self._fair_holds(call, ask)
        tried: list[str] = list(held)  # subscriptions this tenant is over its fair share of
        resorted: list[str] = list(held)  # never (again) a last resort: held, or tried as one
        last_error: UpstreamError | None = None
        if (wait_s := self.broker.pin_wait_s(ask)) > 0:  # [routing] max_wait_s: keep the prompt cache
            log.info(
                "%s waiting %.1fs for the conversation's account instead of moving it",
                call.request_id,
                wait_s,
            )
            await asyncio.sleep(wait_s)
        while True:
            try:
                lease = self.broker.acquire(ask, exclude=tried)
            except AllAccountsBusy as busy:
                if last_error is None:
                    log.warning("%s 429: %s", call.request_id, busy.message)
                    if over_share is not None:  # only its fair share stood between it and an account
                        raise TenantLimitReached(
                            f"tenant {call.tenant or '-'!r}: {over_share.reason}",
                            retry_after_s=over_share.retry_after_s,
                        ) from None
                    raise
                resort = self.broker.last_resort(
                    ask, exclude=resorted, tried=tried, within_s=self.settings.routing.last_resort_s
                )
                if resort is None:
                    # Every account failed for this request: say what the last one said, and when to retry.
                    return self.error_response(
                        call, last_error, retry_after=busy.retry_after_s, account=lease.account
                    )
                lease = await _after_reset(*resort)
                resorted.append(lease.account.id)  # once each
            call.attempts += 1
            if (lost := lease.cache_lost) is not None:
                log.info("%s conversation moved: %s → %s (%s); %d cached tokens written again, ~$%s", call.request_id,
                         lost.from_account, lost.to_account, lost.reason, lost.tokens, lost.cost_usd)  # fmt: skip
            call.account_id, call.upstream_model = lease.account.id, lease.model
            call.upstream_format = lease.upstream_format
            if call.op != "generate" and lease.upstream_format is not call.fmt:
                return self._answer_locally(call, lease)
            try:
                upstream = await self._send(call, lease)
            except UpstreamError as exc:
                exc.message = scrub(lease.account, exc.message)
                log.warning("%s %s: %s; failing over", call.request_id, lease.account.id, exc.message)
                lease.release(_outcome_of(exc))
                tried.append(lease.account.id)
                call.failovers.append((lease.account.id, 0, exc.message[:300]))
                last_error = exc
                continue
            except BaseException:
                lease.release(Outcome.client_error())
                raise
            if upstream.status < 400:  # error responses are observed with their body (_upstream_error)
                self.broker.observe(
                    lease.account.id, upstream.response.headers, status=upstream.status, model=lease.model
                )
            else:
                response, failed_over = await self._upstream_error(call, lease, upstream)
                if response is not None:
                    return response
                tried.append(lease.account.id)
                call.failovers.append((lease.account.id, failed_over.status, failed_over.message[:300]))
                last_error = failed_over
                continue
            try:
                return await self._finish(request, call, lease, upstream)
            except ResponseLimit as exc:  # any account would pass it again
                return self.error_response(call, exc)
            except UpstreamError as exc:  # the answer broke before its first byte reached the client
                log.warning("%s %s: %s; failing over", call.request_id, lease.account.id, exc.message)
                tried.append(lease.account.id)
                call.failovers.append((lease.account.id, 0, exc.message[:300]))
                last_error = exc

    def _fair_holds(self, call: Call, ask: Ask) -> tuple[list[str], Verdict | None]:
        """The subscription accounts this tenant is over its fair share of, and the soonest refusal."""
        if not self.fair.is_shared:
            return [], None
        broker = self.broker
        route = (
            broker.route_in(ask.route, ask.model)
            if ask.route != broker.route_name
            else broker.route(ask.model)
        )
        now = broker.clock()
        held: list[str] = []
        soonest: Verdict | None = None
        for c in (*route.primary, *route.fallback):
            account = c.account
            if not account.is_oauth:
                continue
            self.fair.want(call.tenant, account.id, now)
            verdict = self.fair.admits(
                call.tenant, account.id, c.state.windows.values(), now, reserve=account.reserve_pct / 100.0
            )
            if not verdict.admits:
                held.append(account.id)
                if soonest is None or verdict.retry_after_s < soonest.retry_after_s:
                    soonest = verdict
        return held, soonest

    def _answer_locally(self, call: Call, lease: Lease) -> web.Response:
        """count_tokens / compact for an account of another format: no upstream has the endpoint."""
        lease.release(Outcome.client_error())
        if call.op == "count_tokens":
            call.status = 200
            response = convert.estimate_tokens(call)
            response.headers["x-proxygate-request-id"] = call.request_id
            return response
        raise ClientError(
            f"{call.op} needs an account that speaks {call.fmt.value}; {lease.account.id} speaks "
            f"{lease.upstream_format.value}"
        )

    async def _send(self, call: Call, lease: Lease) -> Upstream:
        same = lease.upstream_format is call.fmt
        models = self.settings.models  # [models."<glob>"]: what a converted request may carry
        body = self._fast_body(call, lease) if same else convert.request_body(call, lease, models)
        # Subscriptions: a token valid past the refresh margin, and the body their backend demands.
        account = await self.keeper.fresh(lease.account)
        if account.is_oauth:
            body = adjust_body(account, body, op=call.op)
        upstream = await self._open(call, lease, account, body, same)
        if upstream.status == 401 and account.is_oauth:  # revoked early: refresh once, send once more
            upstream.close()
            account = await self.keeper.refresh_after_401(account, account.access_token)
            upstream = await self._open(call, lease, account, body, same)
        if (
            lease.upstream_format is Format.anthropic
            and upstream.inflater is None
            and is_signature_error(upstream.status, upstream.first_chunk)
            and (unsigned := strip_thinking(body)) is not None
        ):  # a conversation that moved: its thinking blocks were signed for another account
            upstream.close()
            self.signature_retries += 1
            log.info("%s %s: invalid thinking signature; sent once more without thinking blocks",
                     call.request_id, lease.account.id)  # fmt: skip
            upstream = await self._open(call, lease, account, unsigned, same)
        return upstream

    async def _open(self, call: Call, lease: Lease, account: Account, body: bytes, same: bool) -> Upstream:
        req = build_request(
            account,
            lease.upstream_format,
            lease.model,
            call.headers,
            is_stream=call.is_stream,
            same_format=same,
            op=call.op,
            query=call.query,
        )
        return await open_upstream(self.session, req.url, req.headers, body, self.settings.timeouts)

    def _fast_body(self, call: Call, lease: Lease) -> bytes:
        """The client's bytes, untouched unless the model is remapped or usage must be asked for."""
        changes: dict[str, Any] = {}
        if lease.model != call.model and call.fmt is not Format.gemini:
            changes["model"] = lease.model
        if _wants_usage_injected(call):
            changes["stream_options"] = {**(call.body.get("stream_options") or {}), "include_usage": True}
        if not changes:
            return call.raw_body
        return orjson.dumps({**call.body, **changes})

    async def _upstream_error(
        self, call: Call, lease: Lease, upstream: Upstream
    ) -> tuple[web.Response | None, UpstreamError]:
        """Answer the client (a 4xx about its request) or return the error to fail over on."""
        status = upstream.status
        try:
            raw = await upstream.read_all(self.settings.timeouts.idle_s, limit=MAX_ERROR_BODY)
        except (TimeoutError, aiohttp.ClientError, OSError, UpstreamError):
            raw = b""
        finally:
            upstream.close()
        raw = scrub_bytes(lease.account, raw)  # a 401 may echo the key: never log, store or return it
        # Quota windows from the headers and a 429's body scope the cooldown (broker/headroom.py).
        self.broker.observe(
            lease.account.id, upstream.response.headers, status=status, body=raw, model=lease.model
        )
        message = _error_message(raw) or f"HTTP {status}"
        outcome = classify_status(status, upstream.response.headers, message, raw.decode("utf-8", "replace"))
        if status in (401, 402, 403) and (ban := refusal_reason(raw.decode("utf-8", "replace"))):
            outcome = Outcome.quarantined(f"{ban}: {message}"[:200])  # banned: never retried
        if refusal := explain_refusal(lease.account, message):  # the account, not the request: fail over
            message, outcome = refusal, Outcome.error(refusal[:200])
        error = UpstreamError(f"{lease.account.id}: HTTP {status}: {message}", status=status)
        error.error_class = _error_class(status)
        lease.release(outcome)
        if outcome.kind != "client_error":
            log.warning("%s %s: HTTP %d %s; failing over", call.request_id, lease.account.id, status, message)
            return None, error
        if lease.upstream_format is call.fmt:  # same format: the provider's own error, verbatim
            call.status, call.error_class, call.error = status, error.error_class, message
            headers = self._headers(call, lease, upstream.response.headers)
            if call.output_transform is not None:  # restored, and the account's keys masked again
                raw = scrub_bytes(lease.account, call.output_transform.whole(raw))
            return web.Response(status=status, body=raw, headers=headers), error
        return self.error_response(
            call,
            ProxyError(f"upstream: {message}", status=status, error_class=error.error_class),
            account=lease.account,
        ), error

    # -- success -----------------------------------------------------------------------------

    async def _finish(
        self, request: web.Request, call: Call, lease: Lease, upstream: Upstream
    ) -> web.StreamResponse:
        """Relay the answer; raises ``UpstreamError`` only while nothing reached the client."""
        outcome = Outcome.client_error()  # if the client goes away, the account was not at fault
        try:
            response = await self._relay(request, call, lease, upstream)
            call.error = scrub(lease.account, call.error)
            if not call.error_class:
                outcome = Outcome.ok()
            elif call.error_class != "cancelled" and not upstream.ran_past_deadline:
                # A client that left, or our max_stream_s, keeps client_error: no cooldown.
                outcome = Outcome.error(call.error)
            return response
        except ResponseLimit:
            raise  # our cap, not the account's fault: no cooldown
        except UpstreamError as exc:
            exc.message = scrub(lease.account, exc.message)
            call.status, call.usage = 0, Usage()
            outcome = _outcome_of(exc)
            raise
        finally:
            upstream.close()
            lease.release(outcome)
            if self.fair.is_shared and lease.account.is_oauth:
                windows = self.broker.state(lease.account.id).windows.values()
                self.fair.record(
                    call.tenant, lease.account.id, windows, call.usage.total_tokens, self.broker.clock()
                )
            # For [budgets], and the prompt-cache economics of the account and conversation.
            self.broker.record_usage(
                lease.account.id, call.usage, lease.model, conversation=call.conversation
            )

    async def _relay(
        self, request: web.Request, call: Call, lease: Lease, upstream: Upstream
    ) -> web.StreamResponse:
        idle_s = self.settings.timeouts.idle_s
        max_bytes = self.settings.max_response_bytes
        # max_stream_s counts from the request's arrival; keep-alive pings cannot extend it.
        upstream.deadline = call.started + self.settings.max_stream_s
        headers = self._headers(call, lease, upstream.response.headers)
        call.status = upstream.status
        same = lease.upstream_format is call.fmt
        upstream_streams = "text/event-stream" in upstream.response.headers.get("content-type", "")
        if upstream_streams and not call.is_stream:  # the ChatGPT backend only streams
            return await collected_response(
                call, lease, upstream, headers, idle_s=idle_s, max_bytes=max_bytes
            )
        is_stream = call.is_stream and upstream_streams
        if is_stream:
            # A stream starts answering now, so there is no failover and nothing needs the
            # request any more: it must not keep a 20-100 KB body alive (bench/README.md).
            call.body, call.raw_body = {}, b""
        if not same:
            return await convert.relay(
                request,
                call,
                lease,
                upstream,
                headers,
                idle_s=idle_s,
                is_stream=is_stream,
                max_bytes=max_bytes,
            )
        strip_usage_chunk = _wants_usage_injected(call)
        # Only the Chat usage-chunk filter needs every event; otherwise usage is read sparsely.
        sniffer = UsageSniffer(call.fmt, is_stream=is_stream, needs_events=strip_usage_chunk)
        if not is_stream:
            body = await read_answer(upstream, idle_s, max_bytes)
            sniffer.feed(body)
            sniffer.close()
            if not sniffer.is_complete and "json" in headers.get("content-type", ""):
                # A connection closed mid-body without a length: only the JSON shows the cut.
                raise ConnectionLost("upstream answer is not complete JSON")
            call.usage = sniffer.usage
            return web.Response(status=upstream.status, body=answered(call, body), headers=headers)
        out = await start_response(request, upstream.status, headers, is_stream=True)
        await relay_bytes(upstream, out, call, sniffer, idle_s, strip_usage_chunk=strip_usage_chunk)
        await out.write_eof()
        return out

    def _headers(self, call: Call, lease: Lease, upstream_headers: Mapping[str, str]) -> dict[str, str]:
        headers = response_headers(upstream_headers)
        headers["x-proxygate-request-id"] = call.request_id
        if self.settings.expose_account_header:
            headers["x-proxygate-account"] = lease.account.id
        headers["x-proxygate-route"] = self.broker.route_label(failover=call.attempts > 1, name=call.route)
        if call.shaped:  # what features/limits.py removed or clamped
            headers["x-proxygate-shaped"] = ",".join(call.shaped)
        return headers


def _wants_usage_injected(call: Call) -> bool:
    """A streaming Chat request that did not ask for usage: we ask, and hide the extra chunk."""
    return call.fmt is Format.chat and call.is_stream and not call.asks_usage


async def _after_reset(lease: Lease, wait_s: float) -> Lease:
    """A last-resort lease once its account's known reset has passed: sooner meets the same 429."""
    if wait_s > 0:
        try:
            await asyncio.sleep(wait_s)
        except BaseException:  # the client left while we waited
            lease.release(Outcome.client_error())
            raise
    return lease


def classify_status(status: int, headers: Mapping[str, str], message: str, body: str = "") -> Outcome:
    """What an upstream error status means for the account (protocols.md §5.12).

    A 403 is the account's problem (needs re-auth; a permanent refusal is quarantined by the
    caller) unless its body says the *input* was refused: OpenRouter answers a prompt its
    moderation flagged with 403, and one flagged prompt must not take the account out of the pool.
    """
    retry = retry_after_s(headers)
    if status == 403 and _CONTENT_REFUSAL.search(body or message) and not refusal_reason(body or message):
        return Outcome.client_error()
    if status == 429:
        return Outcome.rate_limited(retry, reason=f"429: {message}"[:200])
    if status in (529, 503):
        return Outcome.overloaded(retry, reason=f"{status}: {message}"[:200])
    if status in (401, 403):
        return Outcome.auth_failed(f"{status}: {message}"[:200])
    if status >= 500 or status in (402, 408, 409):
        return Outcome.error(f"{status}: {message}"[:200], retry)
    return Outcome.client_error()


# What providers say when they refuse the input, not the account (OpenRouter's moderation:
# "Your input was flagged for …" with metadata.reasons / flagged_input; content policy refusals).
_CONTENT_REFUSAL = re.compile(
    r"flagged|moderation|content[ _-]?(?:policy|filter|management)|safety (?:system|policy)"
    r"|violates? (?:our|the) (?:usage|content) polic",
    re.IGNORECASE,
)


def _error_class(status: int) -> str:
    return {
        400: "invalid_request",
        401: "authentication",
        402: "billing",
        403: "permission",
        404: "not_found",
        413: "too_large",
        429: "rate_limited",
        503: "overloaded",
        529: "overloaded",
        504: "timeout",
    }.get(status, "server" if status >= 500 else "invalid_request")


def _error_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:300]
    if isinstance(data, list) and data:  # Gemini sometimes wraps errors in a list
        data = data[0]
    if not isinstance(data, dict):
        return ""
    err = data.get("error", data)
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "")[:500]
    return str(err)[:500]


def _outcome_of(exc: UpstreamError) -> Outcome:
    if ban := refusal_reason(exc.message):  # e.g. a token refresh saying the account itself is gone
        return Outcome.quarantined(f"{ban}: {exc.message}"[:200])
    if exc.error_class == "authentication":  # a dead refresh token (providers/oauth.ReauthRequired)
        return Outcome.auth_failed(exc.message)
    if exc.error_class == "overloaded":
        return Outcome.overloaded(reason=exc.message)
    if exc.error_class == "rate_limited":
        return Outcome.rate_limited(getattr(exc, "retry_after_s", None), reason=exc.message)
    return Outcome.error(exc.message)


__all__ = ["Pipeline", "classify_status", "default_stages"]
