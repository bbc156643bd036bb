"""The text both learned-stage feature sets read (classifier.py's n-grams, concepts.py's lexicon): NFKC-folded,
lower-cased, invisible characters dropped, whitespace collapsed, and two evasions undone.

- Turkish dotted and dotless i: ``"İ".lower()`` is ``i`` plus a combining dot and ``ı`` is not ``i``, so
  "İGNORE" and "ıgnore" would share no n-gram with "ignore" (and Turkish words would spell two ways). Both fold
  to a plain ``i``, in the text and in the lexicon alike.
- Look-alike letters: an attack written in Latin with Cyrillic or Greek letters that look like Latin ones
  ("Ехрlаin hоw") reads as English to a person and as nothing to n-grams. When a text has Latin letters and its
  Cyrillic and Greek letters are nearly all look-alikes (under a fifth look like no Latin letter: д, и, я, λ…),
  they fold to Latin. Russian or Greek prose, a third or more of it such letters, is left as it is.
"""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_INVISIBLE = {cp: None for cp in (0x200B, 0x200C, 0x200D, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0xFEFF, 0x00AD)}
_TURKISH_I = {0x0131: "i", 0x0307: None}
_LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "n", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y",
    "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ω": "w",
})
_LATIN = re.compile(r"[a-z]")
_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03ff\u0400-\u052f]")
_ALIKE = re.compile("[" + "".join(map(chr, _LOOKALIKES)) + "]")


def normalise(text: str) -> str:
    if text.isascii():
        return _SPACE.sub(" ", text.lower()).strip()
    low = unicodedata.normalize("NFKC", text.translate(_INVISIBLE)).lower().translate(_TURKISH_I)
    foreign = len(_CYRILLIC_GREEK.findall(low))
    if foreign and _LATIN.search(low) and (foreign - len(_ALIKE.findall(low))) * 5 < foreign:
        low = low.translate(_LOOKALIKES)
    return _SPACE.sub(" ", low).strip()
