"""The injection detector's learned stage: a linear model over hashed character and word n-grams, in pure Python.

The patterns (injection.py) know phrasings; this knows what attack text looks like from ~2000 public attacks and
~2300 benign prompts (scripts/train_injection_model.py, its sources and licences in ``model/MODEL_CARD.md``).
Features: the text as folding.py normalises it (lower case, NFKC, no invisible characters, Turkish i and Cyrillic
look-alikes undone, single spaces); its UTF-8
character 3-, 4- and 5-grams, its words and word pairs, and its cross-lingual concepts (concepts.py) and their
neighbours, each of those ``concept_copies`` times; each hashed into one of ``buckets`` weights. The margin is
``bias + Σ weights / √(number of features)`` (logistic regression on L2-normalised binary features), and the score
``1 / (1 + e^−(margin − operating_margin))``: 0.5 is the operating point chosen at training time, so
``guard.injection.threshold`` means the same for both stages.

Why not a transformer: the guard runs on every request, on a 2-core server, without torch. This costs a few
hundred µs for a chat turn. Texts longer than ``window`` characters are scored window by window (the highest
counts), at most ``max_windows`` of them from the head and the tail; long texts are remembered by a keyed hash,
as the pattern scorer does, so a chat history's old turns are not scored again.

Weights are package data, named by the sha256 of their bytes and checked against the manifest when loaded: a
missing or altered file is a start-up error that names it (or ``guard.injection.model: off``).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import sys
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import pairwise, repeat
from pathlib import Path

from singularity_ops.errors import ConfigError
from singularity_ops.exporter.gateway.guard.concepts import Concepts
from singularity_ops.exporter.gateway.guard.folding import normalise

MODEL_DIR = Path(__file__).resolve().parent / "model"
MANIFEST = "injection-model.json"
FORMAT = 1

_WORD = re.compile(r"\w+")
_PAD = b"\0" * 8
_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True)
class Featurizer:
    """Hashed n-grams of one window of normalised text. Character n-grams are read eight bytes at a time (the
    windows of a ``Q`` memoryview at each of 8 offsets) and masked to 3, 4 or 5 bytes; their values never collide
    across lengths, so one modulus hashes them all. Shared by training and inference: the features are the same."""

    buckets: int
    char_ngrams: tuple[int, ...] = (3, 4, 5)
    words: bool = True
    word_pairs: bool = True
    concepts: Concepts | None = field(default=None, compare=False, repr=False)
    concept_copies: int = 1  # each concept feature hashed this many times: its say against hundreds of n-grams
    # a concept feature's buckets, hashed once: at most C + 2C² keys for a lexicon of C concepts
    _concept_buckets: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __call__(self, low: str) -> set[int]:
        data = low.encode("utf-8", "replace")
        size = len(data)
        view = memoryview(data + _PAD)
        grams: list[int] = []
        for offset in range(8):
            grams += view[offset:offset + ((size - offset) // 8 + 1) * 8].cast("Q").tolist()
        if _BIG_ENDIAN:  # the n-gram values are the little-endian reading of the bytes, everywhere
            grams = [int.from_bytes(g.to_bytes(8, "big"), "little") for g in grams]
        buckets = repeat(self.buckets)
        features: set[int] = set()
        for n in self.char_ngrams:
            features.update(map(operator.mod, map(operator.and_, grams, repeat((1 << (8 * n)) - 1)), buckets))
        if self.words or self.word_pairs:
            words = _WORD.findall(low)
            if self.words:
                features.update(map(operator.mod, map(_word_key, words), buckets))
            if self.word_pairs:
                features.update(map(operator.mod, map(_word_key, map(" ".join, pairwise(words))), buckets))
        if self.concepts is not None:
            found = self.concepts(low)
            keys = found + [f"{a} {b}" for a, b in pairwise(found)]
            keys += [f"{a} {b}" for a, b in zip(found, found[2:], strict=False)]  # one concept between them
            for key in keys:
                features.update(self._concept_buckets.get(key) or self._hash_concept(key))
        return features

    def _hash_concept(self, key: str) -> tuple[int, ...]:
        names = [f"{key}#{copy}" for copy in range(self.concept_copies)] if self.concept_copies > 1 else [key]
        found = self._concept_buckets[key] = tuple(_concept_key(name) % self.buckets for name in names)
        return found


def _word_key(word: str) -> int:
    return zlib.crc32(word.encode("utf-8", "replace")) | 1 << 40  # apart from any 5-byte character n-gram


def _concept_key(name: str) -> int:
    return zlib.crc32(name.encode()) | 1 << 41  # apart from words and character n-grams


def windows(low: str, size: int, most: int) -> list[str]:
    """The text as windows of ``size`` characters overlapping by a quarter, at most ``most`` of them: those at the
    head and at the tail when there are more."""
    if len(low) <= size:
        return [low]
    step = size * 3 // 4
    starts = list(range(0, len(low) - size + step, step))
    if len(starts) > most:
        starts = starts[:(most + 1) // 2] + starts[-(most // 2):]
    return [low[start:start + size] for start in starts]


class InjectionModel:
    def __init__(self, featurizer: Featurizer, weights: array, scale: float, bias: float, operating_margin: float,
                 version: str, window: int = 2048, max_windows: int = 4, cache_size: int = 4096,
                 cache_min_chars: int = 2048) -> None:
        if len(weights) != featurizer.buckets:
            raise ValueError(f"{len(weights)} weights for {featurizer.buckets} buckets")
        self.featurizer = featurizer
        self.weights = weights
        self.scale = scale
        self.bias = bias
        self.operating_margin = operating_margin
        self.version = version
        self.window = window
        self.max_windows = max_windows
        self.cache_size = cache_size
        self.cache_min_chars = cache_min_chars
        self._cache: OrderedDict[tuple[int, int], float] = OrderedDict()

    def margin(self, low: str) -> float:
        """The linear model's margin for one window of normalised text."""
        features = self.featurizer(low)
        if len(features) < 2:  # itemgetter of one item returns the item, not a tuple
            return self.bias + self.scale * sum(self.weights[f] for f in features) / math.sqrt(len(features) or 1)
        total = sum(operator.itemgetter(*features)(self.weights))
        return self.bias + self.scale * total / math.sqrt(len(features))

    def score(self, text: str) -> float:
        """0..1; at least 0.5 at and above the operating point."""
        if len(text) < self.cache_min_chars:
            return self._score(text)
        key = (hash(text), len(text))  # str hashes are SipHash, keyed per process: no crafted collisions
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._score(text)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return found

    def _score(self, text: str) -> float:
        low = normalise(text)
        best = max(self.margin(part) for part in windows(low, self.window, self.max_windows))
        return _sigmoid(best - self.operating_margin)


def _sigmoid(x: float) -> float:
    if x < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def load_model(manifest: Path | None = None) -> InjectionModel:
    """The model the manifest names (by default the one shipped in the package), its weights checked against the
    manifest's sha256. Any problem is a ``ConfigError`` that names the file and the way out."""
    path = manifest or MODEL_DIR / MANIFEST
    way_out = "reinstall singularity-ops, or set guard.injection.model: off to run with the patterns alone"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, this version reads {FORMAT}")
        data = _pinned(path.parent / meta["weights"], meta["sha256"])
        weights = array("h")
        weights.frombytes(data)
        if _BIG_ENDIAN:
            weights.byteswap()  # stored little-endian
        featurizer = Featurizer(int(meta["buckets"]), tuple(meta["char_ngrams"]), bool(meta["words"]),
                                bool(meta["word_pairs"]), _concepts(path.parent, meta.get("concepts")),
                                int(meta.get("concepts", {}).get("copies", 1)))
        return InjectionModel(featurizer, weights, float(meta["scale"]), float(meta["bias"]),
                              float(meta["operating_margin"]), meta["sha256"][:12], int(meta["window"]),
                              int(meta["max_windows"]))
    except FileNotFoundError as exc:
        raise ConfigError(f"the injection model cannot be loaded: {exc.filename} is missing; {way_out}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the injection model {path} cannot be loaded: {exc}; {way_out}") from None


def _concepts(folder: Path, meta: dict | None) -> Concepts | None:
    """The concept lexicon the weights were trained with, checked against its sha256 like the weights."""
    if meta is None:
        return None
    return Concepts(json.loads(_pinned(folder / meta["file"], meta["sha256"])))


def _pinned(path: Path, sha256: str) -> bytes:
    """The file's bytes, if they are the ones the manifest's ``sha256`` names."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(f"{path.name} has sha256 {digest[:12]}…, the manifest says {sha256[:12]}… "
                         "(corrupt or replaced)")
    return data


def save_model(folder: Path, weights: array, *, buckets: int, char_ngrams: tuple[int, ...], words: bool,
               word_pairs: bool, scale: float, bias: float, operating_margin: float, window: int, max_windows: int,
               concepts: Path | None = None, concept_copies: int = 1, extra: dict | None = None) -> Path:
    """Write the weights (int16, little-endian, named by their hash) and the manifest beside them, with the concept
    lexicon's hash (copied beside them when it is elsewhere); the training script's half of ``load_model``."""
    data = _swapped(weights) if _BIG_ENDIAN else weights.tobytes()
    digest = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("injection-*.bin"):
        old.unlink()
    name = f"injection-{digest[:16]}.bin"
    (folder / name).write_bytes(data)
    meta = {"format": FORMAT, "weights": name, "sha256": digest, "buckets": buckets, "char_ngrams": list(char_ngrams),
            "words": words, "word_pairs": word_pairs, "scale": scale, "bias": bias,
            "operating_margin": operating_margin, "window": window, "max_windows": max_windows, **(extra or {})}
    if concepts is not None:
        lexicon = concepts.read_bytes()
        if concepts.resolve() != (folder / concepts.name).resolve():
            (folder / concepts.name).write_bytes(lexicon)
        meta["concepts"] = {"file": concepts.name, "sha256": hashlib.sha256(lexicon).hexdigest(),
                            "copies": concept_copies}
    path = folder / MANIFEST
    path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path


def _swapped(weights: array) -> bytes:
    copy = array("h", weights)
    copy.byteswap()
    return copy.tobytes()
