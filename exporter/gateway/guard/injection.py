"""The fast prompt-injection scorer: normalised text, the linear-time rules of ``patterns.py``, a score in 0..1.

Why patterns and not a guard model: the best public guard models score 79–95 % on Lakera's PINT benchmark but
take 100–200 ms per prompt on a CPU and over-block prompts that merely contain trigger words. This runs on every
request in microseconds and explains its verdicts; the learned stage (classifier.py, a linear n-gram model in
pure Python) runs beside it on every text and finds what is phrased differently (``PromptScreen``: the higher score
counts). A bigger model can sit behind ``Classifier`` for the prompts the patterns find suspicious.

Before the rules run, the text is normalised: text hidden in Unicode tag characters is decoded, zero-width and bidi
controls are dropped (and counted as a trick), compatibility forms are folded (NFKC); instructions in base64, hex,
URL or ``\\u`` escapes, rot13 or reversed are decoded and scored too.

Each rule has a weight; the rules that match combine as independent evidence, ``1 − Π(1 − w)``.

Cost: a rule whose literal gate is absent costs one substring search, and ``re`` finds candidates with its fast
literal search instead of trying every position; each rule tries at most 256 candidates. Text beyond
``max_scan_chars`` is skipped in the middle (head and tail are scanned). bench/guard.py measures that the time grows
linearly with adversarial inputs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import importlib
import logging
import re
import unicodedata
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from singularity_ops.config import GuardInjectionConfig
from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.guard.classifier import InjectionModel, load_model
from singularity_ops.exporter.gateway.guard.patterns import ENCODING, RULES, Rule

log = logging.getLogger(__name__)

_INVISIBLE = {cp: None for cp in (0x200B, 0x200C, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF, 0x00AD)}
_BIDI = frozenset(chr(cp) for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
_TAGS = range(0xE0000, 0xE0080)
_B64 = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
# Words whose rot13 or reversed form in a text says the text is an encoded instruction: decode and score it too.
_ROT13_GATES = tuple(codecs.encode(w, "rot13") for w in ("ignore", "instruction"))
_REVERSED_GATES = tuple(w[::-1] for w in ("ignore", "instruction"))


@dataclass(frozen=True)
class Finding:
    score: float
    reasons: tuple[str, ...]  # categories that matched, strongest first
    excerpt: str | None  # the text around the strongest match (not yet redacted)


CLEAN = Finding(0.0, (), None)


@dataclass(frozen=True)
class Verdict:
    """What the two stages said about a request's texts. ``score`` is the higher of the patterns' score and the
    model's (and the optional classifier's); ``stage`` names which of them reached ``threshold``."""

    score: float
    finding: Finding  # the patterns': categories and excerpt (for a model-only verdict, the head of its text)
    model_score: float | None  # None: no learned stage (guard.injection.model: off)
    stage: str  # "patterns", "model", "patterns+model", "classifier", or "" below the threshold

    @property
    def reasons(self) -> str:
        return ", ".join(self.finding.reasons) or ("learned model" if "model" in self.stage else self.stage)

    @property
    def detail(self) -> str:
        """The event's reason: the rules that matched, which stage fired, both scores."""
        model = "off" if self.model_score is None else f"{self.model_score:.2f}"
        return f"{self.reasons} (stage {self.stage}: patterns {self.finding.score:.2f}, model {model})"


class Classifier(Protocol):
    """An optional second opinion (``guard.injection.classifier: module:factory``), asked only about prompts the
    patterns find suspicious (score ≥ ``classifier_min_score``), off the event loop. Returns 0..1."""

    def score(self, text: str) -> float: ...


def load_classifier(spec: str) -> Classifier:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"guard.injection.classifier must be 'module:factory', got {spec!r}")
    return getattr(importlib.import_module(module), name)()


class PromptScreen:
    """The two stages as the guard asks them, each text (the prompt, a user turn, a tool result) on its own: the
    patterns, then the learned model (classifier.py) on every text; the request's score is the highest either gives
    to any of its texts. The optional classifier is asked only about prompts the patterns find suspicious, in a
    worker thread."""

    def __init__(self, policy: GuardInjectionConfig) -> None:
        self.scorer = InjectionScorer(policy.max_scan_chars)
        self.threshold = policy.threshold
        self.model: InjectionModel | None = None
        if policy.model != "off":
            self.model = load_model(None if policy.model == "builtin" else Path(policy.model).expanduser())
        self.min_score = policy.classifier_min_score
        self.classifier: Classifier | None = None
        if policy.classifier:
            try:
                self.classifier = load_classifier(policy.classifier)
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                raise ConfigError(f"guard.injection.classifier {policy.classifier!r} cannot be loaded: {exc}") \
                    from None

    async def assess(self, texts: list[str]) -> Verdict:
        finding, model_score, model_text = CLEAN, 0.0, ""
        for text in texts:
            found = self.scorer.score(text)
            if found.score > finding.score:
                finding = found
            if self.model is not None:
                value = self.model.score(text)
                if value > model_score:
                    model_score, model_text = value, text
        score = max(finding.score, model_score)
        stages = [name for name, value in (("patterns", finding.score), ("model", model_score))
                  if value >= self.threshold]
        if self.classifier is not None and finding.score >= self.min_score:
            value = await self._classify("\n".join(texts))
            if value > score:
                score = value
                stages = stages or (["classifier"] if value >= self.threshold else [])
        if "model" in stages and finding.excerpt is None:
            finding = Finding(finding.score, finding.reasons, model_text[:200])
        return Verdict(score, finding, model_score if self.model is not None else None, "+".join(stages))

    async def _classify(self, text: str) -> float:
        assert self.classifier is not None
        try:
            value = await asyncio.get_running_loop().run_in_executor(None, self.classifier.score, text)
            return min(1.0, max(0.0, float(value)))
        except Exception:
            log.exception("guard: the injection classifier failed; using the pattern score alone")
            return 0.0


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    regex: re.Pattern[str]
    before: re.Pattern[str] | None


Evidence = dict[int, tuple[str, float, int, int]]  # rule index -> (category, weight, start, end)


class InjectionScorer:
    """``score(text)``. Long texts are remembered by a keyed hash of their content (``cache_size`` of them): a chat
    history sends its old turns again with every request, and they need not be scanned again."""

    def __init__(self, max_scan_chars: int = 131072, cache_size: int = 4096, cache_min_chars: int = 2048) -> None:
        self.max_scan_chars = max_scan_chars
        self.cache_size = cache_size
        self.cache_min_chars = cache_min_chars
        self._cache: OrderedDict[tuple[int, int], Finding] = OrderedDict()
        self.gates: dict[str, list[tuple[int, _Compiled]]] = {}
        for index, rule in enumerate(RULES):
            before = re.compile(rule.before) if rule.before else None
            self.gates.setdefault(rule.gate, []).append(
                (index, _Compiled(rule, re.compile(re.escape(rule.gate) + rule.pattern), before)))
        # Gates that start with a symbol are grouped under it: one memchr-fast search for "<" skips five gates.
        self.groups: dict[str, list[tuple[str, list[tuple[int, _Compiled]]]]] = {}
        for gate, rules in self.gates.items():
            self.groups.setdefault("" if gate[0].isalnum() else gate[0], []).append((gate, rules))

    def score(self, text: str) -> Finding:
        if len(text) < self.cache_min_chars:
            return self._score(text, 0)
        key = (hash(text), len(text))  # str hashes are SipHash, keyed per process: no crafted collisions
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._score(text, 0)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found

    def _score(self, text: str, depth: int) -> Finding:
        if len(text) > self.max_scan_chars:
            half = self.max_scan_chars // 2
            text = text[:half] + "\n" + text[-half:]
        evidence: Evidence = {}
        if not text.isascii():
            text = self._unicode(text, evidence, depth)
        low = text.lower()
        for first, gates in self.groups.items():
            if first and first not in low:
                continue
            for gate, rules in gates:
                if gate in low:
                    self._run(rules, low, evidence)
        if depth == 0:
            self._decoded(text, low, evidence)
        if not evidence:
            return CLEAN
        remaining = 1.0
        strongest: dict[str, float] = {}
        for category, weight, _, _ in evidence.values():
            remaining *= 1.0 - weight
            strongest[category] = max(weight, strongest.get(category, 0.0))
        _, _, start, end = max(evidence.values(), key=lambda item: item[1])
        excerpt = text[max(0, start - 40):end + 40] if end > start else None
        reasons = tuple(sorted(strongest, key=lambda category: -strongest[category]))
        return Finding(round(1.0 - remaining, 4), reasons, excerpt)

    def _run(self, rules: list[tuple[int, _Compiled]], low: str, evidence: Evidence) -> None:
        for index, compiled in rules:
            found = self._match(compiled, low)
            if found is not None:
                evidence[index] = (compiled.rule.category, *found)

    @staticmethod
    def _match(compiled: _Compiled, low: str) -> tuple[float, int, int] | None:
        rule = compiled.rule
        for tries, match in enumerate(compiled.regex.finditer(low)):
            if tries >= 256:  # a text stuffed with decoys: bounded work, whatever the input
                return None
            start = match.start()
            if rule.word and start and low[start - 1].isalnum():
                continue
            if compiled.before is not None and not compiled.before.search(low, max(0, start - rule.window), start):
                continue
            weight = rule.judge(match, low) if rule.judge is not None else rule.weight
            if weight is not None:
                return weight, start, match.end()
        return None

    def _inner(self, decoded: str, evidence: Evidence, key: int, base: float) -> None:
        """Score text decoded from an encoding; what it says counts, plus ``base`` for having been hidden."""
        inner = self._score(decoded, 1)
        if inner.score:
            weight = min(0.95, 1.0 - (1.0 - inner.score) * (1.0 - base))
            if evidence.get(key, (ENCODING, 0.0))[1] < weight:
                evidence[key] = (ENCODING, weight, 0, 0)

    def _unicode(self, text: str, evidence: Evidence, depth: int) -> str:
        """Hidden text in tag characters is decoded and scanned; invisible characters are dropped (so that
        "ig\u200bnore" reads "ignore"); compatibility forms are folded (NFKC: fullwidth letters, ligatures)."""
        hidden = "".join(chr(ord(c) - 0xE0000) for c in text if ord(c) in _TAGS)
        if hidden and any(not (c.isalnum() or c == "\x7f") for c in hidden):  # not a flag emoji's letters
            evidence[-1] = (ENCODING, 0.7, 0, 0)
            if depth == 0:
                self._inner(hidden, evidence, -2, 0.7)
        invisible = sum(1 for c in text if ord(c) in _INVISIBLE)
        if any(c in _BIDI for c in text) or invisible >= 3:
            evidence[-3] = (ENCODING, 0.3, 0, 0)
        text = text.translate(_INVISIBLE)
        if hidden:
            text = "".join(c for c in text if ord(c) not in _TAGS)
        return unicodedata.normalize("NFKC", text)

    def _decoded(self, text: str, low: str, evidence: Evidence) -> None:
        """Instructions hidden in an encoding: decoded and, when they read as text, scored too."""
        if len(text) <= 1024 or "base64" in low or "b64" in low:
            self._base64(text, evidence)
        if "%2" in low and low.count("%2") >= 4:
            self._inner(urllib.parse.unquote(text), evidence, -4, 0.2)
        if "\\u00" in low and low.count("\\u00") >= 8:
            with contextlib.suppress(UnicodeDecodeError):
                self._inner(text.encode("latin-1", "backslashreplace").decode("unicode_escape"), evidence, -5, 0.2)
        if any(gate in low for gate in _ROT13_GATES):
            self._inner(codecs.encode(text, "rot13"), evidence, -6, 0.3)
        if any(gate in low for gate in _REVERSED_GATES):
            self._inner(text[::-1], evidence, -7, 0.3)

    def _base64(self, text: str, evidence: Evidence) -> None:
        runs = 0
        for word in text.split():
            if len(word) < 24:
                continue
            for pattern, decode in ((_HEX, bytes.fromhex), (_B64, _b64decode)):
                match = pattern.search(word)
                if match is None:
                    continue
                runs += 1
                if runs > 4:
                    return
                try:
                    decoded = decode(match.group(0)[:8192]).decode("utf-8")
                except (binascii.Error, ValueError):
                    continue
                if " " in decoded and sum(c.isprintable() or c.isspace() for c in decoded) >= 0.95 * len(decoded):
                    self._inner(decoded, evidence, -8, 0.2)
                break


def _b64decode(run: str) -> bytes:
    return base64.urlsafe_b64decode(run.replace("+", "-").replace("/", "_") + "=" * (-len(run) % 4))


_REDACTIONS = (
    (re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"), "[email]"),
    (re.compile(r"(https?://[^\s/?#]{1,255})[^\s)\]]*"), r"\1/[…]"),
    (re.compile(r"[A-Za-z0-9+/_=-]{24,}"), "[token]"),
    (re.compile(r"\d[\d ()./-]{5,}\d"), "[number]"),
    (re.compile(r"\s+"), " "),
)


def redact(excerpt: str, limit: int = 160) -> str:
    """A short excerpt fit for the events table: no addresses, URLs' paths and queries, tokens or long numbers."""
    excerpt = excerpt[:limit * 2]
    for pattern, replacement in _REDACTIONS:
        excerpt = pattern.sub(replacement, excerpt)
    excerpt = excerpt.strip()
    return excerpt if len(excerpt) <= limit else excerpt[:limit - 1] + "…"
