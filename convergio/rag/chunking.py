"""Token-aware chunking with overlap: chunks of about N tokens that end where sentences end.

Tokens are cl100k_base tokens counted offline (``convergio.agents.tokens``). A chunk is
filled with whole sentences; the next chunk starts with the last sentences of the one
before (up to ``overlap`` tokens), so a fact that straddles a boundary is found whole
in one of them. A sentence longer than a chunk is cut on token boundaries.

An embedder's ``window`` is a second limit, in the embedder's own tokens: MiniLM reads 254
word pieces, and 160 cl100k tokens of Cyrillic are about 300 of them (the tail was never
embedded). A chunk is also closed before it would overflow the window. A sentence over the
window, or over a chunk with token pieces over the window, is cut once between words into
parts as full as both limits allow (a word over them by itself, between characters). English
prose is chunked as it always was (the same content hashes): it has about as many word pieces
as tokens. Code and Cyrillic have more: their chunks end sooner than before (the model never
read past 254 word pieces of them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convergio.agents.tokens import chunk_text_by_tokens, count_tokens

if TYPE_CHECKING:
    from convergio.rag.embeddings import Window

_PARAGRAPH = re.compile(r"\n\s*\n")
# A sentence ends before a capital: a Latin, Greek (Ά..Ϋ) or Cyrillic (Ѐ..Я) one. Latin text is
# cut as it always was (the same chunks, the same content hashes).
_CAPITALS = "A-Z\u0386\u0388-\u038f\u0391-\u03ab\u0400-\u042f"
_SENTENCE = re.compile(rf"(?<=[.!?])\s+(?=[\"'(\[]?[{_CAPITALS}0-9#*-])")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    tokens: int


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int  # cl100k
    window: int = 0  # the embedder's tokens (0 without a window)


def _sentences(text: str) -> list[tuple[str, int]]:
    """Sentences (and headings, list items) with their token counts, whatever their length."""
    units: list[tuple[str, int]] = []
    for block in _PARAGRAPH.split(text):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        # Markdown headings stay units (and lines) of their own: they title what follows.
        while lines and lines[0].startswith("#"):
            heading = lines.pop(0)
            units.append((heading, count_tokens(heading)))
        paragraph = " ".join(lines)
        for sentence in _SENTENCE.split(paragraph):
            sentence = sentence.strip()
            if sentence:
                units.append((sentence, count_tokens(sentence)))
    return units


def _token_pieces(sentence: str, tokens: int, size: int) -> list[tuple[str, int]]:
    """The sentence, or if longer than a chunk its pieces of ``size`` tokens (as always without a window)."""
    if tokens <= size:
        return [(sentence, tokens)]
    pieces = chunk_text_by_tokens(sentence, size)
    return [(piece.strip(), count_tokens(piece)) for piece in pieces if piece.strip()]


def _units(text: str, size: int, window: Window | None) -> list[_Unit]:
    """The sentences cut to fit a chunk, counted in the window's tokens too (one batch)."""
    sentences = [(sentence, _token_pieces(sentence, tokens, size)) for sentence, tokens in _sentences(text)]
    if window is None:
        return [_Unit(piece, tokens) for _, pieces in sentences for piece, tokens in pieces]
    counts = iter(window.count([piece for _, pieces in sentences for piece, _ in pieces]))
    units: list[_Unit] = []
    for sentence, pieces in sentences:
        counted = [next(counts) for _ in pieces]
        if max(counted) <= window.tokens:  # English prose: as without a window
            units += [_Unit(piece, tokens, n) for (piece, tokens), n in zip(pieces, counted)]
        else:  # not cut again (token pieces may end inside a word): cut once, between words
            units += _cut_between_words(sentence, size, window)
    return units


def _cut_between_words(text: str, size: int, window: Window) -> list[_Unit]:
    """``text`` cut between words into parts as full as both limits allow.

    cl100k splits text before merging tokens, and never across the whitespace before a word: a
    part's tokens are its first word's plus, for each further word, those of the word with the
    whitespace before it. Word pieces add up likewise (see ``Window``).
    """
    spans = [match.span() for match in _WORD.finditer(text)]
    starts = [0] + [end for _, end in spans[:-1]]  # each word with the whitespace before it
    tokens = [count_tokens(text[start:end]) for start, (_, end) in zip(starts, spans)]
    pieces = window.count([text[start:end] for start, end in spans])
    units: list[_Unit] = []
    first, last, part_tokens, part_pieces = -1, -1, 0, 0  # the part being filled (character offsets)
    for (start, end), word_tokens, word_pieces in zip(spans, tokens, pieces):
        if first >= 0 and (part_tokens + word_tokens > size or part_pieces + word_pieces > window.tokens):
            units.append(_Unit(text[first:last], count_tokens(text[first:last]), part_pieces))
            first = -1
        if first < 0:
            word_tokens = count_tokens(text[start:end])  # a part's first word, without the space before it
            if word_tokens > size or word_pieces > window.tokens:
                units += _cut_word(text[start:end], size, window)
                continue
            first, part_tokens, part_pieces = start, 0, 0
        last, part_tokens, part_pieces = end, part_tokens + word_tokens, part_pieces + word_pieces
    if first >= 0:
        units.append(_Unit(text[first:last], count_tokens(text[first:last]), part_pieces))
    return units


def _cut_word(word: str, size: int, window: Window) -> list[_Unit]:
    """A word over a limit by itself (CJK text has no spaces) cut between characters, parts as full as
    both limits allow (at least one character each)."""
    units: list[_Unit] = []
    start = 0
    while start < len(word):
        length = _longest(len(word) - start, lambda n: _within(word[start : start + n], size, window))
        part = word[start : start + length]
        units.append(_Unit(part, count_tokens(part), window.count([part])[0]))
        start += length
    return units


def _within(text: str, size: int, window: Window) -> bool:
    return count_tokens(text) <= size and window.count([text])[0] <= window.tokens


def _longest(most: int, fits: Callable[[int], bool]) -> int:
    """The largest n <= ``most`` that ``fits`` (at least 1), probing lengths that double and then
    halving: time grows with the part, not with the whole word."""
    good, bad = 0, 1
    while fits(bad):  # good fits (or is 0), bad does not
        if bad == most:
            return most
        good, bad = bad, min(bad * 2, most)
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return max(good, 1)


def chunk_text(
    text: str, tokens_per_chunk: int = 200, overlap: int = 40, window: Window | None = None
) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``tokens_per_chunk`` tokens (plus one separator each)
    and, with a ``window``, of at most ``window.tokens`` of the embedder's tokens."""
    size = max(tokens_per_chunk, 1)
    overlap = min(max(overlap, 0), size // 2)
    limit = window.tokens if window is not None else sys.maxsize
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    tokens = pieces = 0  # running sums over `current` (summing it again per unit is quadratic)
    fresh = 0  # units in `current` that are not overlap from the previous chunk

    def close() -> None:
        body = ""
        for index, unit in enumerate(current):
            after_heading = index > 0 and current[index - 1].text.startswith("#")
            separator = "\n" if unit.text.startswith("#") or after_heading else " "
            body += ("" if index == 0 else separator) + unit.text
        chunks.append(Chunk(ordinal=len(chunks), text=body, tokens=count_tokens(body)))

    for unit in _units(text, size, window):
        if current and (tokens + unit.tokens > size or pieces + unit.window > limit):
            close()
            carried: list[_Unit] = []
            tokens = pieces = 0
            for previous in reversed(current):
                if (tokens + previous.tokens > overlap or tokens + previous.tokens + unit.tokens > size
                        or pieces + previous.window + unit.window > limit):
                    break
                carried.insert(0, previous)
                tokens, pieces = tokens + previous.tokens, pieces + previous.window
            current, fresh = carried, 0
        current.append(unit)
        tokens, pieces, fresh = tokens + unit.tokens, pieces + unit.window, fresh + 1
    if current and fresh:
        close()
    return chunks
