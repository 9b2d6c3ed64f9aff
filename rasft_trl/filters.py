"""Optional rollout filters of the reference implementation (method section 2), applied before verification.

Each is a pure function of the rollout text (or its length) with its thresholds as arguments; all are off by
default and every drop is counted in the trainer logs (`filters/<name>`). A dropped rollout is never a training
target and counts as not correct in the solvability.
"""

from __future__ import annotations

from collections import Counter


def word_ngrams(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Set of word n-grams of `text` (lower-cased, split on whitespace)."""
    words = text.lower().split()
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 0))}


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity of two sets; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicates(texts: list[str], threshold: float = 0.82, n: int = 3) -> list[bool]:
    """Flag each text whose word-n-gram Jaccard similarity with an earlier, unflagged text is >= `threshold`."""
    kept: list[set] = []
    flags = []
    for text in texts:
        grams = word_ngrams(text, n)
        duplicate = any(jaccard(grams, other) >= threshold for other in kept)
        flags.append(duplicate)
        if not duplicate:
            kept.append(grams)
    return flags


def is_looping(text: str, ngram_size: int = 4, repeat_fraction: float = 0.5, min_ngrams: int = 20) -> bool:
    """A degenerate loop: among at least `min_ngrams` word n-grams, the share that repeat an earlier one is
    >= `repeat_fraction` (the same phrase generated again and again)."""
    words = text.split()
    grams = [tuple(words[i : i + ngram_size]) for i in range(max(len(words) - ngram_size + 1, 0))]
    if len(grams) < min_ngrams:
        return False
    repeats = sum(count - 1 for count in Counter(grams).values())
    return repeats / len(grams) >= repeat_fraction


def is_shortcut(text: str, min_reasoning_chars: int = 20, answer_marker: str = "\\boxed") -> bool:
    """An answer without reasoning: fewer than `min_reasoning_chars` non-space characters before the first
    answer marker."""
    position = text.find(answer_marker)
    if position < 0:
        return False
    return len("".join(text[:position].split())) < min_reasoning_chars


def filter_rollouts(
    texts: list[str],
    lengths: list[int],
    near_duplicate_threshold: float | None = None,
    loop_ngram_size: int = 4,
    loop_repeat_fraction: float | None = None,
    min_tokens: int = 0,
    shortcut_min_chars: int | None = None,
) -> list[str | None]:
    """Reason each rollout of ONE problem is dropped (`"near_duplicate"`, `"loop"`, `"too_short"`, `"shortcut"`)
    or `None` when it is kept. A `None` threshold switches that filter off."""
    reasons: list[str | None] = [None] * len(texts)
    for i, (text, length) in enumerate(zip(texts, lengths)):
        if length < min_tokens:
            reasons[i] = "too_short"
        elif loop_repeat_fraction is not None and is_looping(text, loop_ngram_size, loop_repeat_fraction):
            reasons[i] = "loop"
        elif shortcut_min_chars is not None and is_shortcut(text, shortcut_min_chars):
            reasons[i] = "shortcut"
    if near_duplicate_threshold is not None:
        candidates = [i for i, r in enumerate(reasons) if r is None]
        flags = near_duplicates([texts[i] for i in candidates], near_duplicate_threshold)
        for i, flagged in zip(candidates, flags):
            if flagged:
                reasons[i] = "near_duplicate"
    return reasons
