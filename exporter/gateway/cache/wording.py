"""The check a semantic match must also pass (``cache.semantic_guard``): the two last turns carry the same content
words in the same order.

Embeddings place "Cancel my subscription" and "Don't cancel my subscription", or "a plan for 5 users" and "for 50
users", close together; on a public set of such traps (bench/cache_threshold.py) no similarity threshold keeps
false hits near 1 % while still matching rewordings. Content words are what is left once function words (articles,
pronouns, auxiliaries, fillers such as "okay so") are dropped: numbers, names, negations, verbs and nouns. Case,
punctuation, fillers and typos (words of six letters or more, one letter longer at most, 80 % alike) do not matter;
a changed,
added, dropped or moved content word does.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

FUNCTION_WORDS = frozenset((
    "a", "an", "the", "i", "me", "my", "mine", "we", "us", "our", "ours", "you", "your", "yours", "it", "its", "is",
    "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "doing", "how", "what", "which",
    "who", "whom", "whose", "when", "where", "why", "can", "could", "would", "should", "will", "shall", "may",
    "might", "must", "to", "of", "in", "on", "at", "for", "from", "by", "with", "about", "as", "into", "onto", "than",
    "then", "so", "and", "or", "but", "if", "this", "that", "these", "those", "there", "here", "okay", "ok", "please",
    "just", "hi", "hello", "hey", "thanks", "thank", "tell", "know", "want", "like", "need", "get", "got", "im",
    "ive", "id", "youre", "lets", "let", "also", "really"
))
_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower().replace("'", "").replace("’", "")) if w not in FUNCTION_WORDS]


def _same_word(one: str, other: str) -> bool:
    if one == other:
        return True
    if min(len(one), len(other)) < 6 or abs(len(one) - len(other)) > 1 or one.isdigit() or other.isdigit():
        return False
    return SequenceMatcher(None, one, other).ratio() >= 0.8


def same_content(one: str, other: str) -> bool:
    first, second = content_words(one), content_words(other)
    return len(first) == len(second) and all(_same_word(a, b) for a, b in zip(first, second, strict=True))
