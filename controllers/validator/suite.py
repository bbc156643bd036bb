"""A validation suite: YAML read and checked once, versioned by the hash of its content.

The simplest suite is ``{name: smoke, cases: [{id: capital, prompt: "What is the capital of France?",
expect: {contains: Paris}}]}``; docs/MODEL_VALIDATION.md describes every key. Anything unknown or malformed is a
``SuiteError`` naming the case and key, before a model is asked anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from singularity_ops.controllers.validator.scorers import Scorer, read_expect
from singularity_ops.errors import SingularityError

DEFAULT_SUITE = "default_suite.yaml"
SUITE_KEYS = {"name", "description", "options", "cases"}
CASE_KEYS = {"id", "prompt", "messages", "system", "options", "tags", "weight", "expect"}
ROLES = {"system", "user", "assistant"}


class SuiteError(SingularityError):
    pass


@dataclass(frozen=True)
class Case:
    id: str
    messages: tuple[dict[str, str], ...]
    options: dict[str, Any]
    tags: tuple[str, ...]
    weight: float
    expect: tuple[Scorer, ...]

    @property
    def question(self) -> str:
        """What the judge is shown as the question: the conversation's user turns."""
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == "user")


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    hash: str  # sha256 of the parsed content: formatting and comments do not change it
    cases: tuple[Case, ...]
    source: str  # the file, or "default" for the shipped suite

    @property
    def needs(self) -> set[str]:
        """The remote scorers the suite uses (``similar``, ``judge``)."""
        return {scorer.kind for case in self.cases for scorer in case.expect if scorer.remote}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.hash, "cases": len(self.cases), "source": self.source}


def content_hash(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def _messages(raw: dict[str, Any], where: str) -> tuple[dict[str, str], ...]:
    if ("prompt" in raw) == ("messages" in raw):
        raise ValueError(f"{where}: give either 'prompt' or 'messages'")
    system = raw.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"{where}.system must be text")
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    if "prompt" in raw:
        if not isinstance(raw["prompt"], str) or not raw["prompt"].strip():
            raise ValueError(f"{where}.prompt must be non-empty text")
        return (*messages, {"role": "user", "content": raw["prompt"]})
    listed = raw["messages"]
    if not isinstance(listed, list) or not listed:
        raise ValueError(f"{where}.messages must be a non-empty list of {{role, content}}")
    for index, message in enumerate(listed):
        if (not isinstance(message, dict) or set(message) != {"role", "content"} or message["role"] not in ROLES
                or not isinstance(message["content"], str)):
            raise ValueError(f"{where}.messages[{index}] must be {{role: system|user|assistant, content: text}}")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}.messages must end with a user message")
    return tuple(messages)


def _options(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise ValueError(f"{where} must map Ollama option names (temperature, num_predict, ...) to values")
    return dict(raw)


def _case(raw: Any, index: int, defaults: dict[str, Any]) -> Case:
    where = f"cases[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping with id, prompt and expect")
    if not isinstance(raw.get("id"), str | int) or not str(raw["id"]).strip():
        raise ValueError(f"{where} needs an 'id'")
    where = f"case {raw['id']!r}"
    unknown = sorted(set(raw) - CASE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(CASE_KEYS))})")
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}.tags must be a list of words")
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ValueError(f"{where}.weight must be a number above 0")
    if "expect" not in raw:
        raise ValueError(f"{where} needs 'expect'")
    return Case(str(raw["id"]), _messages(raw, where), {**defaults, **_options(raw.get("options"), f"{where}.options")},
                tuple(tags), float(weight), read_expect(raw["expect"], f"{where}.expect"))


def parse_suite(document: Any, source: str) -> Suite:
    """A parsed YAML document → a Suite; SuiteError naming the place of the first problem."""
    try:
        if not isinstance(document, dict):
            raise ValueError("a suite is a mapping: {name: ..., cases: [...]}")
        unknown = sorted(set(document) - SUITE_KEYS)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(SUITE_KEYS))})")
        name = document.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("the suite needs a 'name'")
        cases_raw = document.get("cases")
        if not isinstance(cases_raw, list) or not cases_raw:
            raise ValueError("the suite needs a non-empty 'cases' list")
        defaults = _options(document.get("options"), "options")
        cases = tuple(_case(raw, index, defaults) for index, raw in enumerate(cases_raw))
        seen: set[str] = set()
        for case in cases:
            if case.id in seen:
                raise ValueError(f"case id {case.id!r} is used twice")
            seen.add(case.id)
    except ValueError as exc:
        raise SuiteError(f"suite {source}: {exc}") from None
    return Suite(name.strip(), str(document.get("description") or ""), content_hash(document), cases, source)


def load_suite(path: Path | None = None) -> Suite:
    """The suite in ``path``, or the shipped default suite."""
    if path is None:
        package = resources.files("singularity_ops.controllers.validator")
        text = package.joinpath(DEFAULT_SUITE).read_text(encoding="utf-8")
        source = "default"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SuiteError(f"cannot read suite {path}: {exc.strerror}") from None
        source = str(path)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SuiteError(f"suite {source}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_suite(document, source)
