"""The gateway's threat detector: one call per request, after the body is read and before any upstream work.

``await guard.check(peer, path, headers, endpoint, payload)`` returns the client id and either None (let it through)
or a ``Refusal``: 401 (missing or wrong API key), 403 (banned, or blocked: an injection or repeats with action
``block``), 429 with ``Retry-After`` (per-client rate, or repeats with action ``throttle``). In order:

1. identity (guard_identity): the address, X-Forwarded-For only from ``gateway.trusted_proxies``;
2. the global spike detector counts the request (guard_rate);
3. a banned address is refused (guard_bans);
4. the API key, when ``gateway.api_keys_file`` is set: a failure counts towards a brute-force ban;
5. the client's token bucket (stricter while a spike lasts);
6. inference requests: the same prompt too often from one client; the injection scorer (guard_injection).

Per-client state (bucket, failures, recent prompts) lives in one LRU of ``guard.max_clients`` entries, so a flood
of fresh client ids costs a bounded amount of memory. Client ids never go into metric labels: only into the
``security_events`` and ``security_bans`` tables (through the history writer, off the request path) and the logs.

Sample exposition::

    singularity_security_events_total{kind="brute_force",action="ban"} 1.0
    singularity_security_banned_clients 1.0
    singularity_security_auth_failures_total 5.0
    singularity_security_spike_active 0.0
    singularity_security_tracked_clients 42.0

Check by hand: ``singularity-ops security events --since 1h``, ``singularity-ops security bans list``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from singularity_ops.config import Config
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.endpoints import Endpoint
from singularity_ops.exporter.gateway.guard.bans import Ban, BanList, Failures, bantime, load_bans
from singularity_ops.exporter.gateway.guard.identity import (
    OPEN_PATHS,
    ApiKeys,
    Networks,
    client_address,
    parse_networks,
    presented_key,
)
from singularity_ops.exporter.gateway.guard.injection import (
    CLEAN,
    Classifier,
    Finding,
    InjectionScorer,
    load_classifier,
    redact,
)
from singularity_ops.exporter.gateway.guard.rate import Bucket, Spike, SpikeDetector
from singularity_ops.store import KeptConnection

log = logging.getLogger(__name__)

# Every (kind, action) a detection can have; all exposed from 0 so that increase() sees the first one.
KIND_ACTIONS: tuple[tuple[str, str], ...] = (
    ("rate", "throttle"), ("spike", "flag"), ("brute_force", "flag"), ("brute_force", "ban"),
    ("repeat", "flag"), ("repeat", "throttle"), ("repeat", "block"), ("injection", "flag"), ("injection", "block"),
)
GLOBAL = "*"  # the client of events that concern all of them (spikes)
MAX_PROMPTS_PER_CLIENT = 8


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # singularity_gateway_rejected_requests_total{reason} and the operation's error_type
    message: str
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="singularity-ops"'}
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None


class ClientState:
    __slots__ = ("bucket", "failures", "noted", "prompts")

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket
        self.failures: Failures | None = None
        self.prompts: dict[int, list[float]] | None = None  # prompt key -> [count, window start]
        self.noted: dict[tuple[str, str], float] | None = None  # (kind, action) -> when last written


def prompt_of(endpoint: Endpoint, payload: Mapping[str, Any]) -> Any:
    return payload.get("messages") if endpoint.chat else payload.get("prompt", payload.get("input"))


def prompt_texts(endpoint: Endpoint, prompt: Any) -> list[str]:
    """What the injection scorer reads: the prompt, or the user and tool turns of a chat (not the system prompt,
    which the client's own application sets, nor assistant turns, the model's own words)."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list):
        return []
    if not endpoint.chat:
        return [item for item in prompt if isinstance(item, str)]
    texts: list[str] = []
    for message in prompt:
        if not isinstance(message, dict) or message.get("role") in ("system", "assistant"):
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(part["text"] for part in content
                         if isinstance(part, dict) and isinstance(part.get("text"), str))
    return texts


def prompt_hash(prompt: Any) -> str:
    """As ``requests.prompt_hash``, so that an event and its request can be joined."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _repeat_key(prompt: Any) -> int | None:
    if isinstance(prompt, str):
        return hash(prompt)
    if isinstance(prompt, list) and prompt:
        return hash(tuple((m.get("role"), str(m.get("content"))) if isinstance(m, dict) else str(m) for m in prompt))
    return None


class GuardMetrics(Collector):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        guard = self.guard
        events = CounterMetricFamily("singularity_security_events",
                                     "Threat-detector detections, by detector and what was done "
                                     "(flag: recorded, throttle: 429, block: 403, ban: the client is banned)",
                                     labels=["kind", "action"])
        for (kind, action), count in guard.events.items():
            events.add_metric([kind, action], count)
        yield events
        yield GaugeMetricFamily("singularity_security_banned_clients", "Clients banned right now",
                                value=guard.bans.count_active(guard.clock()))
        yield CounterMetricFamily("singularity_security_auth_failures",
                                  "Requests refused for a missing or wrong API key", value=guard.auth_failures)
        yield GaugeMetricFamily("singularity_security_spike_active",
                                "1 while the global request rate is a spike against its baseline",
                                value=1 if guard.spike is not None and guard.spike.active else 0)
        yield GaugeMetricFamily("singularity_security_tracked_clients",
                                "Clients whose state the detector keeps (at most guard.max_clients)",
                                value=len(guard.clients))


class Guard:
    def __init__(self, config: Config, submit_history: Callable[[str, dict[str, Any]], None] | None = None,
                 connect: Callable[[], psycopg.Connection] | None = None,
                 alert: Callable[[bool, str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        guard = config.guard
        self.config = guard
        self.submit_history = submit_history
        self.connect = connect
        self.alert = alert
        self.clock = clock
        self.store_text = config.history.store_text
        self.trusted = Networks(parse_networks(config.gateway.trusted_proxies))
        self.exempt = Networks(parse_networks(guard.exempt_networks))
        keys_file = config.gateway.api_keys_file
        self.keys = ApiKeys.load(keys_file) if keys_file is not None else None
        self.rate = guard.rate.requests_per_minute / 60.0
        self.burst = float(guard.rate.burst)
        now = clock()
        spike = guard.spike
        self.spike = SpikeDetector(spike.interval_seconds, spike.baseline_intervals, spike.threshold,
                                   spike.min_requests_per_second, now) if spike.enabled else None
        self.scorer = InjectionScorer(guard.injection.max_scan_chars) if guard.injection.action != "off" else None
        self.classifier: Classifier | None = None
        if guard.injection.classifier:
            try:
                self.classifier = load_classifier(guard.injection.classifier)
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                raise ConfigError(f"guard.injection.classifier {guard.injection.classifier!r} cannot be loaded: "
                                  f"{exc}") from None
        self.clients: OrderedDict[str, ClientState] = OrderedDict()
        self.bans = BanList(guard.max_clients, guard.brute_force.recidive_seconds)
        self.events: dict[tuple[str, str], int] = dict.fromkeys(KIND_ACTIONS, 0)
        self.auth_failures = 0
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
                    log.info("guard: reloaded %d API keys from %s", len(self.keys.ids_by_hash), self.keys.path)
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
        if self.spike is not None:
            change = self.spike.observe(now)
            if change is not None:
                self._on_spike(change, now)
        ban = self.bans.active(address, now)
        if ban is not None:
            return address, self._banned(ban, now)
        client, exempt = address, bool(self.exempt) and self.exempt.contains(address)
        if self.keys is not None and path not in OPEN_PATHS:
            key = presented_key(headers)
            key_id = self.keys.identify(key)
            if key_id is None:
                return address, self._failed_auth(address, now, exempt, key is not None)
            client, exempt = key_id, False
            ban = self.bans.active(client, now)
            if ban is not None:
                return client, self._banned(ban, now)
        state = None
        if not exempt:
            state = self._state(client, now)
            spiking = self.spike is not None and self.spike.active
            factor = self.config.spike.rate_factor if spiking else 1.0
            wait = state.bucket.take(now, self.rate * factor, max(1.0, self.burst * factor))
            if wait:
                self._event(client, "rate", "throttle", now, reason=self._rate_reason(factor))
                return client, Refusal(429, "rate_limited", f"rate limit exceeded: {self._rate_reason(factor)}; "
                                                            f"retry in {math.ceil(wait)} s", math.ceil(wait))
        if endpoint is None or payload is None or endpoint.operation == "embeddings":
            return client, None
        prompt = prompt_of(endpoint, payload)
        if state is not None:
            refusal = self._repeats(client, state, prompt, now)
            if refusal is not None:
                return client, refusal
        if self.scorer is not None:
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
        seconds = max(1, math.ceil(ban.until - now))
        until = datetime.fromtimestamp(ban.until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return Refusal(403, "banned", f"client banned until {until} ({ban.reason}); retry in {seconds} s", seconds)

    def _failed_auth(self, address: str, now: float, exempt: bool, presented: bool) -> Refusal:
        self.auth_failures += 1
        policy = self.config.brute_force
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
        if presented:
            return Refusal(401, "unauthorized", "invalid API key (send a key listed in gateway.api_keys_file as "
                                                "'Authorization: Bearer KEY')")
        return Refusal(401, "unauthorized", "missing API key: this gateway needs 'Authorization: Bearer KEY'")

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
        key = _repeat_key(prompt)
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
        assert self.scorer is not None
        finding = CLEAN
        for text in texts:
            found = self.scorer.score(text)
            if found.score > finding.score:
                finding = found
        policy = self.config.injection
        score = finding.score
        if self.classifier is not None and score >= policy.classifier_min_score:
            score = max(score, await self._classify("\n".join(texts)))
        if score < policy.threshold:
            return None
        reason = ", ".join(finding.reasons) or "classifier"
        self._event(client, "injection", policy.action, now, score=score, reason=reason, prompt=prompt,
                    finding=finding)
        if policy.action != "block":
            return None
        return Refusal(403, "injection", f"request refused by the gateway's security policy: prompt injection "
                                         f"suspected ({reason}; score {score:.2f})")

    async def _classify(self, text: str) -> float:
        assert self.classifier is not None
        try:
            value = await asyncio.get_running_loop().run_in_executor(None, self.classifier.score, text)
            return min(1.0, max(0.0, float(value)))
        except Exception:
            log.exception("guard: the injection classifier failed; using the pattern score alone")
            return 0.0

    # --- events ------------------------------------------------------------------------------------------------

    def _event(self, client: str, kind: str, action: str, now: float, *, score: float | None = None,
               reason: str | None = None, prompt: Any = None, finding: Finding | None = None,
               always: bool = False) -> None:
        """Count a detection; write it to ``security_events`` and the log, at most once per client, kind and action
        every ``guard.event_interval_seconds`` (a flood makes one row a minute, not one per request)."""
        self.events[kind, action] += 1
        if client == GLOBAL:
            noted = self._spike_noted
        else:
            state = self._state(client, now)
            noted = state.noted if state.noted is not None else {}
            state.noted = noted
        last = noted.get((kind, action))
        if not always and last is not None and now - last < self.config.event_interval_seconds:
            return
        noted[kind, action] = now
        log.warning("guard: %s %s client %s: %s%s", kind, action, client, reason or "",
                    f" (score {score:.2f})" if score is not None and kind == "injection" else "")
        if self.submit_history is None:
            return
        excerpt = None
        if finding is not None and finding.excerpt and self.store_text:
            excerpt = redact(finding.excerpt)
        self.submit_history("security_events", {
            "id": uuid.uuid4(), "at": datetime.fromtimestamp(now, UTC), "client": client, "kind": kind,
            "action": action, "score": float(score) if score is not None else None, "reason": reason,
            "prompt_hash": prompt_hash(prompt) if prompt is not None else None, "excerpt": excerpt,
        })

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
