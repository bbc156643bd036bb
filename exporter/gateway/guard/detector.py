"""The gateway's guard: one call per request, after the body is read and before any upstream work.

``await guard.check(peer, path, headers, endpoint, payload)`` returns the client id and either None (let it through)
or a ``Refusal``: 401 (missing or wrong API key), 403 (banned; a key without the scope the route needs; an admin
route without an admin key (access.py); blocked: an injection or repeats with action ``block``), 429 with
``Retry-After`` (per-client rate, or repeats with action ``throttle``). In order:

1. identity (identity.py): the address, X-Forwarded-For only from ``gateway.trusted_proxies``; a forwarded request
   from an exempt, untrusted peer is counted and warned about (access.py);
2. the global spike detector counts the request (rate.py);
3. a banned address is refused (bans.py);
4. the API key, when ``gateway.api_keys_file`` is set (keys.py): a failure counts towards a brute-force ban;
5. the client's token bucket (stricter while a spike lasts);
6. admin routes: the admin scope or the loopback rule, each call an audit event (access.py);
7. inference requests: the same prompt too often from one client; the injection detector: patterns
   (injection.py) and the learned model (classifier.py) on each user turn and tool result, the higher score counts.

With ``guard.enabled: false`` only the access steps (1, 4, 6) remain: keys, scopes and the admin rule are not
anomaly detection and stay on. Per-client state (bucket, failures, recent prompts) lives in one LRU of
``guard.max_clients`` entries, so a flood of fresh client ids costs a bounded amount of memory. Client ids never go
into metric labels (metrics.py): only into the ``security_events`` and ``security_bans`` tables (events.py) and
the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from singularity_ops.config import Config
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.endpoints import Endpoint
from singularity_ops.exporter.gateway.guard.access import (
    ForwardedWatch,
    Refusal,
    admin_from_loopback,
    admin_refusal,
    decide_admin,
    inference_refusal,
    is_admin_route,
)
from singularity_ops.exporter.gateway.guard.bans import Ban, BanList, Failures, bantime, load_bans, time_left
from singularity_ops.exporter.gateway.guard.events import GLOBAL, EventLog
from singularity_ops.exporter.gateway.guard.identity import (
    OPEN_PATHS,
    Networks,
    carries_forwarding,
    client_address,
    parse_networks,
    presented_key,
)
from singularity_ops.exporter.gateway.guard.injection import PromptScreen
from singularity_ops.exporter.gateway.guard.keys import INFERENCE, ApiKeys, Key
from singularity_ops.exporter.gateway.guard.metrics import GuardMetrics
from singularity_ops.exporter.gateway.guard.prompts import prompt_of, prompt_texts, repeat_key
from singularity_ops.exporter.gateway.guard.rate import Bucket, Spike, SpikeDetector
from singularity_ops.store import KeptConnection

__all__ = ["Guard", "GuardMetrics", "Refusal"]

log = logging.getLogger(__name__)

MAX_PROMPTS_PER_CLIENT = 8


class ClientState:
    __slots__ = ("bucket", "failures", "noted", "prompts")

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.failures: Failures | None = None
        self.prompts: dict[int, list[float]] | None = None  # prompt key -> [count, window start]
        self.noted: dict[tuple[str, str], float] | None = None  # (kind, action) -> when last written


class Guard:
    def __init__(self, config: Config, submit_history: Callable[[str, dict[str, Any]], None] | None = None,
                 connect: Callable[[], psycopg.Connection] | None = None,
                 alert: Callable[[bool, str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        guard = config.guard
        self.config = guard
        self.detecting = guard.enabled  # off: only the access steps (keys, scopes, admin routes)
        self.submit_history = submit_history
        self.connect = connect if self.detecting else None
        self.alert = alert
        self.clock = clock
        self.trusted = Networks(parse_networks(config.gateway.trusted_proxies))
        self.exempt = Networks(parse_networks(guard.exempt_networks))
        keys_file = config.gateway.api_keys_file
        self.keys = ApiKeys.load(keys_file) if keys_file is not None else None
        self.rate = guard.rate.requests_per_minute / 60.0
        self.burst = float(guard.rate.burst)
        now = clock()
        spike = guard.spike
        self.spike = SpikeDetector(spike.interval_seconds, spike.baseline_intervals, spike.threshold,
                                   spike.min_requests_per_second, now) if spike.enabled and self.detecting else None
        scan = self.detecting and guard.injection.action != "off"
        self.screen = PromptScreen(guard.injection) if scan else None
        self.clients: OrderedDict[str, ClientState] = OrderedDict()
        self.bans = BanList(guard.max_clients, guard.brute_force.recidive_seconds)
        self.event_log = EventLog(guard.event_interval_seconds, config.history.store_text, submit_history)
        self.events = self.event_log.counts
        self.auth_failures = 0
        self.admin_from_loopback = admin_from_loopback(config)
        self.forwarded = ForwardedWatch()
        self._spike_noted: dict[tuple[str, str], float] = {}
        self._kept = KeptConnection(self.connect) if self.connect is not None else None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bans from the database before the first request, then a sync every ``guard.sync_seconds``."""
        if self.connect is not None:
            try:
                await asyncio.wait_for(self.sync(), timeout=10)
            except TimeoutError:
                log.warning("guard: the database did not answer in 10 s; bans load on the next sync")
        if self.keys is not None or self.connect is not None:
            self._task = asyncio.create_task(self._maintain())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._kept is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._kept.close)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_seconds)
            if self.keys is not None and self.keys.changed():
                try:
                    self.keys = ApiKeys.load(self.keys.path)
                    log.info("guard: reloaded %d API keys from %s", len(self.keys.by_hash), self.keys.path)
                except ConfigError as exc:
                    log.error("guard: keeping the API keys loaded before: %s", exc)
            if self.connect is not None:
                await self.sync()

    async def sync(self) -> None:
        """Read the bans the database has (this gateway's, other gateways', lifted ones gone) into memory."""
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(None, self._load)
        except Exception as exc:  # the database down or not there yet: the history writer says so already
            log.debug("guard: cannot read bans from the database (%s); keeping the ones in memory", exc)
            return
        for client in self.bans.merge(rows, self.clock()):
            log.warning("guard: ban on client %s lifted", client)
            state = self.clients.get(client)
            if state is not None and state.failures is not None:
                state.failures.times.clear()

    def _load(self) -> list[Ban]:
        assert self._kept is not None
        return self._kept.run(lambda conn: load_bans(conn, self.config.brute_force.recidive_seconds,
                                                     self.config.max_clients))

    # --- the request path -------------------------------------------------------------------------------------

    async def check(self, peer: str | None, path: str, headers: Mapping[str, str], endpoint: Endpoint | None,
                    payload: Mapping[str, Any] | None) -> tuple[str, Refusal | None]:
        now = self.clock()
        address = client_address(peer, headers.get("X-Forwarded-For"), self.trusted)
        forwarded = carries_forwarding(headers)
        exempt = self.detecting and bool(self.exempt) and self.exempt.contains(address)
        if exempt and forwarded and not (self.trusted and self.trusted.contains(peer or "")):
            self.forwarded.note(address, now)
        if self.spike is not None:
            change = self.spike.observe(now)
            if change is not None:
                self._on_spike(change, now)
        ban = self.bans.active(address, now)
        if ban is not None:
            return address, self._banned(ban, now)
        client, key = address, None
        if self.keys is not None and path not in OPEN_PATHS:
            presented = presented_key(headers)
            key = self.keys.identify(presented)
            if key is None:
                return address, self._failed_auth(address, now, exempt, presented is not None)
            client, exempt = key.id, False
            ban = self.bans.active(client, now)
            if ban is not None:
                return client, self._banned(ban, now)
        admin = is_admin_route(path)
        if key is not None and not admin and INFERENCE not in key.scopes:
            return client, inference_refusal(key)
        state = None
        if self.detecting and not exempt:
            state = self._state(client, now)
            spiking = self.spike is not None and self.spike.active
            factor = self.config.spike.rate_factor if spiking else 1.0
            wait = state.bucket.take(now, self.rate * factor, max(1.0, self.burst * factor))
            if wait:
                self._event(client, "rate", "throttle", now, reason=self._rate_reason(factor))
                return client, Refusal(429, "rate_limited", f"rate limit exceeded: {self._rate_reason(factor)}; "
                                                            f"retry in {math.ceil(wait)} s", math.ceil(wait))
        if admin:
            return client, self._admin(client, address, path, key, peer, forwarded, now)
        if endpoint is None or payload is None or endpoint.operation == "embeddings":
            return client, None
        prompt = prompt_of(endpoint, payload)
        if state is not None:
            refusal = self._repeats(client, state, prompt, now)
            if refusal is not None:
                return client, refusal
        if self.screen is not None:
            refusal = await self._injection(client, prompt_texts(endpoint, prompt), prompt, now)
            if refusal is not None:
                return client, refusal
        return client, None

    def _state(self, client: str, now: float) -> ClientState:
        clients = self.clients
        state = clients.get(client)
        if state is None:
            state = clients[client] = ClientState(Bucket(self.burst, now))
            if len(clients) > self.config.max_clients:
                clients.popitem(last=False)
        else:
            clients.move_to_end(client)
        return state

    def _rate_reason(self, factor: float) -> str:
        limit = f"{self.config.rate.requests_per_minute * factor:g} requests per minute, bursts of " \
                f"{max(1, round(self.burst * factor))} (guard.rate)"
        return limit + (", halved while the gateway sees a request spike" if factor < 1 else "")

    def _banned(self, ban: Ban, now: float) -> Refusal:
        seconds = max(1, math.ceil(time_left(ban, now)))
        until = datetime.fromtimestamp(ban.until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return Refusal(403, "banned", f"client banned until {until} ({ban.reason}); retry in {seconds} s", seconds)

    def _failed_auth(self, address: str, now: float, exempt: bool, presented: bool) -> Refusal:
        self.auth_failures += 1
        policy = self.config.brute_force
        if not self.detecting:
            return _unauthorized(presented)
        state = self._state(address, now)
        if state.failures is None:
            state.failures = Failures(policy.maxretry)
        if state.failures.add(now, policy.findtime_seconds):
            reason = f"{policy.maxretry} failed authentications within {policy.findtime_seconds:g} s"
            state.failures.times.clear()
            if exempt:
                self._event(address, "brute_force", "flag", now, score=policy.maxretry,
                            reason=reason + " (exempt address: not banned)")
            else:
                return self._banned(self._ban(address, "brute_force", reason, now, policy.maxretry), now)
        return _unauthorized(presented)

    def _admin(self, client: str, address: str, path: str, key: Key | None, peer: str | None, forwarded: bool,
               now: float) -> Refusal | None:
        """Every admin call is an audit event (a row and a log line), let through or not."""
        decision = decide_admin(path, key, peer, forwarded, self.admin_from_loopback)
        reason = decision.reason + (f", from {address}" if client != address else "")
        self.event_log.record(None, client, "admin", "allow" if decision.allowed else "block", now, reason=reason,
                              level=logging.INFO if decision.allowed else logging.WARNING)
        return None if decision.allowed else admin_refusal(path)

    def _ban(self, client: str, kind: str, reason: str, now: float, score: float) -> Ban:
        policy = self.config.brute_force
        strikes = self.bans.strikes(client, now)
        seconds = bantime(strikes, policy.bantime_seconds, policy.bantime_factor, policy.max_bantime_seconds)
        ban = Ban(client, kind, reason, now, now + seconds, strikes)
        self.bans.add(ban, now)
        if self.submit_history is not None:
            self.submit_history("security_bans", ban.row())
        self._event(client, kind, "ban", now, score=score,
                    reason=f"{reason}; banned for {seconds:g} s (strike {strikes})", always=True)
        return ban

    def _repeats(self, client: str, state: ClientState, prompt: Any, now: float) -> Refusal | None:
        key = repeat_key(prompt)
        if key is None:
            return None
        policy = self.config.repeat
        prompts = state.prompts
        if prompts is None:
            prompts = state.prompts = {}
        seen = prompts.get(key)
        if seen is None or now - seen[1] >= policy.window_seconds:
            prompts.pop(key, None)
            prompts[key] = [1, now]
            if len(prompts) > MAX_PROMPTS_PER_CLIENT:
                del prompts[next(iter(prompts))]
            return None
        seen[0] += 1
        if seen[0] <= policy.max_repeats:
            return None
        reason = f"the same prompt {int(seen[0])} times within {policy.window_seconds:g} s " \
                 f"(guard.repeat.max_repeats {policy.max_repeats})"
        self._event(client, "repeat", policy.action, now, score=seen[0], reason=reason, prompt=prompt)
        if policy.action == "flag":
            return None
        seconds = max(1, math.ceil(seen[1] + policy.window_seconds - now))
        if policy.action == "throttle":
            return Refusal(429, "repeated_prompt", f"{reason}; retry in {seconds} s", seconds)
        return Refusal(403, "repeated_prompt", f"request refused by the gateway's security policy: {reason}")

    async def _injection(self, client: str, texts: list[str], prompt: Any, now: float) -> Refusal | None:
        assert self.screen is not None
        verdict = await self.screen.assess(texts)
        policy = self.config.injection
        if verdict.score < policy.threshold:
            return None
        self._event(client, "injection", policy.action, now, score=verdict.score, reason=verdict.detail,
                    prompt=prompt, finding=verdict.finding)
        if policy.action != "block":
            return None
        return Refusal(403, "injection", f"request refused by the gateway's security policy: prompt injection "
                                         f"suspected ({verdict.reasons}; score {verdict.score:.2f})")

    # --- events ------------------------------------------------------------------------------------------------

    def _event(self, client: str, kind: str, action: str, now: float, *, always: bool = False,
               **details: Any) -> None:
        """Count a detection; a row and a log line at most once per client, kind and action every
        ``guard.event_interval_seconds`` (events.py) unless ``always``."""
        if always:
            noted = None
        elif client == GLOBAL:
            noted = self._spike_noted
        else:
            state = self._state(client, now)
            noted = state.noted = state.noted if state.noted is not None else {}
        self.event_log.record(noted, client, kind, action, now, **details)

    def _on_spike(self, spike: Spike, now: float) -> None:
        if spike.active:
            reason = (f"{spike.rate:.1f} requests/s against a baseline of {spike.baseline:.1f} requests/s "
                      f"(robust z {spike.z:.1f}); per-client limits x{self.config.spike.rate_factor:g}")
            self._event(GLOBAL, "spike", "flag", now, score=spike.z, reason=reason)
            if self.alert is not None:
                self.alert(True, "Request spike at the gateway", reason)
        else:
            log.warning("guard: request spike over (%.1f requests/s, baseline %.1f)", spike.rate, spike.baseline)
            if self.alert is not None:
                self.alert(False, "Request spike at the gateway is over",
                           f"{spike.rate:.1f} requests/s, baseline {spike.baseline:.1f} requests/s")


def _unauthorized(presented: bool) -> Refusal:
    if presented:
        return Refusal(401, "unauthorized", "invalid API key (send a key listed in gateway.api_keys_file as "
                                            "'Authorization: Bearer KEY')")
    return Refusal(401, "unauthorized", "missing API key: this gateway needs 'Authorization: Bearer KEY'")
