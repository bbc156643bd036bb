"""Labelled prompts for the injection scorer, their split, and the figures (precision, recall, false positives).

Public data, vendored under ``public/`` with their licences (README.md there says what comes from where):

* bastioncorpus 0.6.0 (PyPI, MIT): 181 labelled rows, malicious injections and benign "false-positive traps"
  that contain trigger words ("ignore", "forget", "act as", "system", "password"), in five languages.
* spikee 0.9.2 (PyPI, Apache-2.0, WithSecure/Reversec): jailbreak templates × injected instructions (composed
  the way ``spikee generate`` does, English only), and 100 benign finance questions meant for false-positive tests.
* jailbreak-corpus-mini-py 0.1.0 (PyPI, MIT): a handful of canonical attacks.

The split is fixed before any tuning and never changes: **held out** = all of spikee plus the bastioncorpus rows
whose id hashes odd; **dev** (what the patterns were checked against) = jailbreak-corpus-mini, the bastioncorpus
rows whose id hashes even, and ``own/benign_prompts.jsonl`` (written for this project, not public data).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent
PUBLIC = DATA / "public"


@dataclass(frozen=True)
class Sample:
    text: str
    malicious: bool
    source: str
    trigger_words: bool = False  # benign, and contains words an injection also uses


TRIGGER_WORDS = ("ignore", "system", "password", "forget", "disregard", "override", "instruction", "prompt",
                 "act as", "pretend", "reveal", "secret", "developer mode", "jailbreak", "api key")


def has_trigger_words(text: str) -> bool:
    low = text.lower()
    return any(word in low for word in TRIGGER_WORDS)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _odd(key: str) -> bool:
    return hashlib.sha256(key.encode()).digest()[0] % 2 == 1


def bastioncorpus(held_out: bool) -> list[Sample]:
    rows = _jsonl(PUBLIC / "bastioncorpus-0.6.0" / "injections.jsonl")
    return [Sample(row["text"].replace("{canary}", "CANARY-7f3a"), row["label"] == "malicious",
                   f"bastioncorpus:{row['id']}",
                   row["label"] == "benign" and has_trigger_words(row["text"]))
            for row in rows if _odd(row["id"]) == held_out]


def spikee() -> list[Sample]:
    samples = []
    for seeds in ("seeds-cybersec-2026-01", "seeds-sysmsg-extraction-2025-04"):
        folder = PUBLIC / "spikee-0.9.2" / seeds
        jailbreaks = [row for row in _jsonl(folder / "jailbreaks.jsonl") if not row.get("lang")]
        instructions = [row for row in _jsonl(folder / "instructions.jsonl") if not row.get("lang")]
        for jailbreak in jailbreaks:
            for instruction in instructions:
                text = jailbreak["text"].replace("<INSTRUCTION>", instruction["instruction"])
                samples.append(Sample(text, True, f"spikee:{seeds}:{jailbreak['id']}:{instruction['id']}"))
    for row in _jsonl(PUBLIC / "spikee-0.9.2" / "seeds-investment-advice-fp" / "standalone_user_inputs.jsonl"):
        if not row.get("lang"):
            samples.append(Sample(row["text"], False, f"spikee:investment-advice-fp:{row['id']}",
                                  has_trigger_words(row["text"])))
    return samples


def jailbreak_corpus_mini() -> list[Sample]:
    rows = json.loads((PUBLIC / "jailbreak-corpus-mini-py-0.1.0" / "corpus.json").read_text(encoding="utf-8"))
    return [Sample(row["prompt"], True, f"jailbreak-corpus-mini:{row['id']}") for row in rows]


def own_benign() -> list[Sample]:
    return [Sample(row["text"], False, "own", row["trigger_words"])
            for row in _jsonl(DATA / "own" / "benign_prompts.jsonl")]


def dev_split() -> list[Sample]:
    return [*jailbreak_corpus_mini(), *bastioncorpus(held_out=False), *own_benign()]


def held_out_split() -> list[Sample]:
    return [*spikee(), *bastioncorpus(held_out=True)]


@dataclass(frozen=True)
class Figures:
    samples: int
    malicious: int
    benign: int
    benign_with_trigger_words: int
    true_positives: int
    false_positives: int
    false_positives_with_trigger_words: int

    @property
    def precision(self) -> float:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.malicious if self.malicious else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.benign if self.benign else 0.0

    @property
    def trigger_word_false_positive_rate(self) -> float:
        return (self.false_positives_with_trigger_words / self.benign_with_trigger_words
                if self.benign_with_trigger_words else 0.0)

    def line(self) -> str:
        return (f"{self.samples} prompts ({self.malicious} injections, {self.benign} benign of which "
                f"{self.benign_with_trigger_words} with trigger words): precision {self.precision:.1%}, "
                f"recall {self.recall:.1%}, false positives {self.false_positive_rate:.1%} of benign, "
                f"{self.trigger_word_false_positive_rate:.1%} of benign with trigger words")


def evaluate(samples: Iterable[Sample], flagged: Callable[[str], bool]) -> Figures:
    samples = list(samples)
    verdicts = [(sample, flagged(sample.text)) for sample in samples]
    return Figures(
        samples=len(samples),
        malicious=sum(s.malicious for s in samples),
        benign=sum(not s.malicious for s in samples),
        benign_with_trigger_words=sum(s.trigger_words for s in samples),
        true_positives=sum(s.malicious and hit for s, hit in verdicts),
        false_positives=sum(not s.malicious and hit for s, hit in verdicts),
        false_positives_with_trigger_words=sum(s.trigger_words and hit for s, hit in verdicts),
    )
