"""Cross-lingual concepts for the learned injection stage: "ignore", "previous", "instructions", "system prompt",
"pretend", "unrestricted"… in 30 languages, each mapped to one English concept name (model/concepts.json).

Why: character n-grams only know the languages of the training data, and public labelled attacks are nearly all
English. A concept the model learns from English text ("IGNORE PREVIOUS INSTRUCTION") then also counts in Turkish,
Persian or Chinese, where the lexicon has the words. The lexicon was written from general knowledge of the
languages, not from any evaluation source.

Matching: in scripts written with spaces a form matches as a prefix at a word start ("instrucci" for
instrucción/instrucciones), and a form shorter than four characters as a whole word only ("ai", "ora", "mod"
must not fire on "aim", "oracle", "model"); in Chinese, Japanese and Thai, anywhere. The text is the classifier's
normalised one (folding.py), and so is each form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from singularity_ops.exporter.gateway.guard.folding import normalise

_UNSPACED = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_STARTS = re.compile(rf"(?<!\w)\w|[{_UNSPACED}]")
_IS_UNSPACED = re.compile(rf"[{_UNSPACED}]")
SHORTEST_STEM = 4


class Concepts:
    """The concepts of a text, in order of appearance; longest form first where several start at one place."""

    def __init__(self, lexicon: dict[str, dict[str, list[str]]]) -> None:
        forms: dict[str, set[str]] = {}
        for concept, languages in lexicon.items():
            for words in languages.values():
                for word in words:
                    form = normalise(word)
                    if len(form) >= 2:
                        forms.setdefault(form, set()).add(concept)
        self._index: dict[str, list[tuple[str, tuple[str, ...], bool, bool]]] = {}
        for form in sorted(forms, key=len, reverse=True):
            anywhere = bool(_IS_UNSPACED.match(form))
            whole = not anywhere and len(form) < SHORTEST_STEM
            self._index.setdefault(form[:2], []).append((form, tuple(sorted(forms[form])), anywhere, whole))

    @classmethod
    def load(cls, path: Path) -> Concepts:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def __call__(self, low: str) -> list[str]:
        return list(self._find(low))

    def _find(self, low: str) -> Iterator[str]:
        index = self._index
        end = 0
        for start in _STARTS.finditer(low):
            i = start.start()
            if i < end:
                continue
            word_start = i == 0 or not low[i - 1].isalnum()
            for form, concepts, anywhere, whole in index.get(low[i:i + 2], ()):
                if (anywhere or word_start) and low.startswith(form, i) and not (
                        whole and low[i + len(form):i + len(form) + 1].isalnum()):
                    yield from concepts
                    end = i + len(form)
                    break
