"""The scorers a case's ``expect`` names: each is read (and checked) from the suite once, then scores answers.

``equals``, ``contains``, ``regex``, ``json`` and ``number`` look at the answer alone; ``similar`` and ``judge`` ask
Ollama (an embedding model, a judge model) through ``Helpers``. A case passes when every scorer it names passes.
docs/MODEL_VALIDATION.md documents each form.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from singularity_ops.controllers.validator.json_schema import check_schema, errors

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
FENCE = re.compile(r"^```[\w-]*\s*\n(.*?)\n?```$", re.S)
STRIP_CHARS = " \t\r\n\"'`*"
JUDGE_TEMPLATE = """You are grading an AI assistant's answer to a question.

Question:
<<<
{question}
>>>

Answer:
<<<
{answer}
>>>

Rubric: {rubric}

Grade how well the answer meets the rubric from 0 (not at all) to 10 (fully). Reply with JSON only, in this form:
{{"score": <0 to 10>, "reason": "<one sentence>"}}"""


class Helpers(Protocol):
    """What ``similar`` and ``judge`` need from Ollama."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...

    def judge(self, prompt: str) -> str: ...


@dataclass(frozen=True)
class Verdict:
    scorer: str
    passed: bool
    detail: str
    score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the judge's prompt and answer

    def as_json(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "passed": self.passed, "detail": self.detail, "score": self.score,
                **self.extra}


class Scorer:
    kind: ClassVar[str]
    remote: ClassVar[bool] = False  # asks Ollama

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        raise NotImplementedError


def _mapping(raw: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a value or a mapping")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(raw))
    if missing:
        raise ValueError(f"{where}: {missing[0]!r} is required")
    return raw


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{where} must be text or a number, got {type(value).__name__}")
    return str(value)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def normalise(text: str, case_sensitive: bool) -> str:
    """Surrounding whitespace, quotes, backticks and ``*`` and one final period dropped, inner whitespace collapsed."""
    text = " ".join(text.strip(STRIP_CHARS).split())
    text = text[:-1].rstrip(STRIP_CHARS) if text.endswith(".") else text
    return text if case_sensitive else text.casefold()


def excerpt(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Equals(Scorer):
    kind: ClassVar[str] = "equals"
    value: str
    case_sensitive: bool = False

    @classmethod
    def read(cls, raw: Any, where: str) -> Equals:
        if not isinstance(raw, dict):
            return cls(_text(raw, where))
        spec = _mapping(raw, where, {"value", "case_sensitive"}, {"value"})
        return cls(_text(spec["value"], f"{where}.value"), bool(spec.get("case_sensitive", False)))

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        passed = normalise(answer, self.case_sensitive) == normalise(self.value, self.case_sensitive)
        return Verdict(self.kind, passed, f"{'equals' if passed else 'differs from'} {self.value!r}")


@dataclass(frozen=True)
class Contains(Scorer):
    kind: ClassVar[str] = "contains"
    mode: str  # any, all, none
    needles: tuple[str, ...]
    case_sensitive: bool = False

    @classmethod
    def read(cls, raw: Any, where: str) -> Contains:
        if isinstance(raw, list):
            raise ValueError(f"{where}: a list is ambiguous; write {{any: [...]}}, {{all: [...]}} or {{none: [...]}}")
        if not isinstance(raw, dict):
            return cls("all", (_text(raw, where),))
        spec = _mapping(raw, where, {"any", "all", "none", "case_sensitive"}, set())
        modes = [m for m in ("any", "all", "none") if m in spec]
        if len(modes) != 1:
            raise ValueError(f"{where}: give exactly one of any, all, none")
        values = spec[modes[0]]
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ValueError(f"{where}.{modes[0]} is empty")
        needles = tuple(_text(v, f"{where}.{modes[0]}[{i}]") for i, v in enumerate(values))
        return cls(modes[0], needles, bool(spec.get("case_sensitive", False)))

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        haystack = answer if self.case_sensitive else answer.casefold()
        found = [n for n in self.needles if (n if self.case_sensitive else n.casefold()) in haystack]
        missing = [n for n in self.needles if n not in found]
        if self.mode == "any":
            passed, detail = bool(found), f"found {found[0]!r}" if found else f"none of {list(self.needles)}"
        elif self.mode == "all":
            passed, detail = not missing, "found all" if not missing else f"missing {missing}"
        else:
            passed, detail = not found, "none present" if not found else f"contains {found}"
        return Verdict(self.kind, passed, detail)


@dataclass(frozen=True)
class Regex(Scorer):
    kind: ClassVar[str] = "regex"
    pattern: re.Pattern[str]

    @classmethod
    def read(cls, raw: Any, where: str) -> Regex:
        if isinstance(raw, dict):
            spec = _mapping(raw, where, {"pattern", "flags"}, {"pattern"})
            text, flags_text = _text(spec["pattern"], f"{where}.pattern"), str(spec.get("flags", ""))
        else:
            text, flags_text = _text(raw, where), ""
        flags = 0
        for letter in flags_text:
            if letter not in "ims":
                raise ValueError(f"{where}.flags: {letter!r} is not i (ignore case), m (multi-line) or s (dot-all)")
            flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[letter]
        try:
            return cls(re.compile(text, flags))
        except re.error as exc:
            raise ValueError(f"{where}: bad regular expression {text!r}: {exc}") from None

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        match = self.pattern.search(answer)
        detail = f"matched {excerpt(match.group(0), 40)!r}" if match else f"no match for {self.pattern.pattern!r}"
        return Verdict(self.kind, match is not None, detail)


def parse_json_answer(answer: str) -> Any:
    """The answer as JSON: the whole of it, or the one fenced code block it consists of. ValueError otherwise."""
    text = answer.strip()
    fenced = FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def field_value(document: Any, path: str) -> Any:
    """``a.b.0.c`` in a JSON document; KeyError naming the first missing step."""
    node = document
    for step in path.split("."):
        if isinstance(node, list) and step.lstrip("-").isdigit() and -len(node) <= int(step) < len(node):
            node = node[int(step)]
        elif isinstance(node, dict) and step in node:
            node = node[step]
        else:
            raise KeyError(step)
    return node


@dataclass(frozen=True)
class Json(Scorer):
    kind: ClassVar[str] = "json"
    schema: dict[str, Any] | None = None
    fields: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def read(cls, raw: Any, where: str) -> Json:
        if raw is True or raw is None:
            return cls()
        spec = _mapping(raw, where, {"schema", "fields"}, set())
        schema = spec.get("schema")
        if schema is not None:
            check_schema(schema, f"{where}.schema")
        fields = spec.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError(f"{where}.fields must map paths (a.b.0) to expected values")
        return cls(schema, tuple((str(k), v) for k, v in fields.items()))

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        try:
            document = parse_json_answer(answer)
        except ValueError as exc:
            return Verdict(self.kind, False, f"not JSON: {exc}")
        problems = errors(document, self.schema) if self.schema is not None else []
        for path, expected in self.fields:
            try:
                actual = field_value(document, path)
            except KeyError as exc:
                problems.append(f"{path}: no {exc.args[0]!r}")
                continue
            if actual != expected or isinstance(actual, bool) != isinstance(expected, bool):
                problems.append(f"{path}: {actual!r}, expected {expected!r}")
        return Verdict(self.kind, not problems, "; ".join(problems[:3]) if problems else "valid")


@dataclass(frozen=True)
class Number(Scorer):
    kind: ClassVar[str] = "number"
    value: float
    tolerance: float = 0.0
    pick: str = "last"  # last, any

    @classmethod
    def read(cls, raw: Any, where: str) -> Number:
        if not isinstance(raw, dict):
            return cls(_number(raw, where))
        spec = _mapping(raw, where, {"value", "tolerance", "pick"}, {"value"})
        tolerance = _number(spec.get("tolerance", 0), f"{where}.tolerance")
        if tolerance < 0:
            raise ValueError(f"{where}.tolerance must not be negative")
        pick = spec.get("pick", "last")
        if pick not in ("last", "any"):
            raise ValueError(f"{where}.pick must be last or any, got {pick!r}")
        return cls(_number(spec["value"], f"{where}.value"), tolerance, pick)

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        numbers = [float(m.replace(",", "")) for m in NUMBER.findall(answer)]
        if not numbers:
            return Verdict(self.kind, False, "no number in the answer")
        candidates = numbers if self.pick == "any" else numbers[-1:]
        hit = next((n for n in candidates if abs(n - self.value) <= self.tolerance), None)
        if hit is not None:
            return Verdict(self.kind, True, f"found {hit:g}")
        return Verdict(self.kind, False, f"{candidates[-1]:g}, expected {self.value:g} ± {self.tolerance:g}")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@dataclass(frozen=True)
class Similar(Scorer):
    kind: ClassVar[str] = "similar"
    remote: ClassVar[bool] = True
    reference: str
    minimum: float = 0.8

    @classmethod
    def read(cls, raw: Any, where: str) -> Similar:
        if not isinstance(raw, dict):
            return cls(_text(raw, where))
        spec = _mapping(raw, where, {"reference", "min"}, {"reference"})
        minimum = _number(spec.get("min", 0.8), f"{where}.min")
        if not -1 <= minimum <= 1:
            raise ValueError(f"{where}.min is a cosine similarity, between -1 and 1")
        return cls(_text(spec["reference"], f"{where}.reference"), minimum)

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        assert helpers is not None
        if not answer.strip():
            return Verdict(self.kind, False, "empty answer", 0.0)
        first, second = helpers.embed([answer, self.reference])
        similarity = cosine(first, second)
        passed = similarity >= self.minimum
        return Verdict(self.kind, passed, f"cosine {similarity:.3f} {'≥' if passed else '<'} {self.minimum:g}",
                       round(similarity, 6))


def read_judgement(text: str) -> float | None:
    """The judge's score 0..10 from its answer: a JSON object with ``score``, else a lone ``PASS``/``FAIL`` (10/0).
    None when the answer is neither."""
    for candidate in [text.strip(), *re.findall(r"\{[^{}]*\}", text)]:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        score = value.get("score") if isinstance(value, dict) else None
        if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 10:
            return float(score)
    words = set(re.findall(r"\b(PASS|FAIL)\b", text))
    if len(words) == 1:
        return 10.0 if words == {"PASS"} else 0.0
    return None


@dataclass(frozen=True)
class Judge(Scorer):
    kind: ClassVar[str] = "judge"
    remote: ClassVar[bool] = True
    rubric: str
    min_score: float = 7.0

    @classmethod
    def read(cls, raw: Any, where: str) -> Judge:
        if not isinstance(raw, dict):
            return cls(_text(raw, where))
        spec = _mapping(raw, where, {"rubric", "min_score"}, {"rubric"})
        minimum = _number(spec.get("min_score", 7), f"{where}.min_score")
        if not 0 <= minimum <= 10:
            raise ValueError(f"{where}.min_score is on the judge's scale, 0 to 10")
        return cls(_text(spec["rubric"], f"{where}.rubric"), minimum)

    def score(self, answer: str, question: str, helpers: Helpers | None) -> Verdict:
        assert helpers is not None
        prompt = JUDGE_TEMPLATE.format(question=question, answer=answer, rubric=self.rubric)
        reply = helpers.judge(prompt)
        extra = {"judge_prompt": prompt, "judge_answer": reply}
        score = read_judgement(reply)
        if score is None:
            return Verdict(self.kind, False, f"the judge's answer is not a verdict: {excerpt(reply)!r}", None, extra)
        passed = score >= self.min_score
        return Verdict(self.kind, passed, f"judged {score:g}/10 {'≥' if passed else '<'} {self.min_score:g}", score,
                       extra)


SCORERS: dict[str, Any] = {cls.kind: cls for cls in (Equals, Contains, Regex, Json, Number, Similar, Judge)}


def read_expect(raw: Any, where: str) -> tuple[Scorer, ...]:
    """A case's ``expect`` mapping → its scorers, in the order written."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where} must map one or more scorers ({', '.join(SCORERS)}) to what they expect")
    scorers = []
    for kind, spec in raw.items():
        if kind not in SCORERS:
            raise ValueError(f"{where}: unknown scorer {kind!r}; known: {', '.join(SCORERS)}")
        scorers.append(SCORERS[kind].read(spec, f"{where}.{kind}"))
    return tuple(scorers)
