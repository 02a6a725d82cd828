"""Token-aware chunking with overlap: chunks of about N tokens that end where sentences end.

Tokens are cl100k_base tokens counted offline (``convergio.agents.tokens``). A chunk is
filled with whole sentences; the next chunk starts with the last sentences of the one
before (up to ``overlap`` tokens), so a fact that straddles a boundary is found whole
in one of them. A sentence longer than a chunk is cut on token boundaries.

An embedder's ``window`` is a second limit, in the embedder's own tokens: MiniLM reads 254
word pieces, and 160 cl100k tokens of Cyrillic are about 300 of them (the tail was never
embedded). A chunk is also closed before it would overflow the window, and a sentence
longer than the window is cut between words. English chunks stay as they were: English text
has about as many word pieces as cl100k tokens, so the window never closes one.
"""

from __future__ import annotations

import re
import sys
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


def _sentences(text: str, size: int) -> list[tuple[str, int]]:
    """Sentences (and headings, list items) with their token counts; long ones cut to ``size``."""
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
            if not sentence:
                continue
            tokens = count_tokens(sentence)
            if tokens <= size:
                units.append((sentence, tokens))
            else:
                units += [(piece.strip(), count_tokens(piece)) for piece in chunk_text_by_tokens(sentence, size)
                          if piece.strip()]
    return units


def _units(text: str, size: int, window: Window | None) -> list[_Unit]:
    """The sentences, counted in the window's tokens too (one batch); those over it cut between words."""
    sentences = _sentences(text, size)
    if window is None:
        return [_Unit(sentence, tokens) for sentence, tokens in sentences]
    units: list[_Unit] = []
    for (sentence, tokens), counted in zip(sentences, window.count([s for s, _ in sentences])):
        if counted <= window.tokens:
            units.append(_Unit(sentence, tokens, counted))
        else:
            units += [_Unit(part, count_tokens(part), n) for part, n in _fit(sentence, window)]
    return units


def _fit(text: str, window: Window) -> list[tuple[str, int]]:
    """``text`` cut between words into parts that fit the window (with their counts).

    The parts are of about equal size (300 word pieces make two of 150, not 254 and 46: a
    tail that small would be a chunk of its own). A "word" over the window by itself (CJK
    text has no spaces) is cut between characters.
    """
    spans = [match.span() for match in _WORD.finditer(text)]
    counts = window.count([text[start:end] for start, end in spans])
    whole = sum(counts)
    pieces = max(1, -(-whole // window.tokens))  # divisions rounded up
    target = min(window.tokens, -(-whole // pieces))
    parts: list[tuple[str, int]] = []
    first, last, total = -1, -1, 0  # the words (character offsets) of the part being filled

    def flush() -> None:
        if first >= 0:
            parts.append((text[first:last], total))

    for (start, end), counted in zip(spans, counts):
        if counted > window.tokens:
            flush()
            first, total = -1, 0
            parts += _cut_word(text[start:end], counted, window)
            continue
        if first >= 0 and total + counted > target:
            flush()
            first, total = -1, 0
        if first < 0:
            first = start
        last, total = end, total + counted
    flush()
    return parts


def _cut_word(word: str, counted: int, window: Window) -> list[tuple[str, int]]:
    """Equal slices of ``word`` sized to fit the window, each counted again (and cut again if still over)."""
    pieces = -(-counted // window.tokens)  # ceil
    step = -(-len(word) // pieces)
    slices = [word[i : i + step] for i in range(0, len(word), step)]
    parts: list[tuple[str, int]] = []
    for piece, n in zip(slices, window.count(slices)):
        parts += [(piece, n)] if n <= window.tokens or len(piece) == 1 else _cut_word(piece, n, window)
    return parts


def _fits(units: list[_Unit], size: int, limit: int) -> bool:
    return sum(u.tokens for u in units) <= size and sum(u.window for u in units) <= limit


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
    fresh = 0  # units in `current` that are not overlap from the previous chunk

    def close() -> None:
        body = ""
        for index, unit in enumerate(current):
            after_heading = index > 0 and current[index - 1].text.startswith("#")
            separator = "\n" if unit.text.startswith("#") or after_heading else " "
            body += ("" if index == 0 else separator) + unit.text
        chunks.append(Chunk(ordinal=len(chunks), text=body, tokens=count_tokens(body)))

    for unit in _units(text, size, window):
        if current and not _fits([*current, unit], size, limit):
            close()
            carried: list[_Unit] = []
            for previous in reversed(current):
                kept = [previous, *carried]
                if sum(u.tokens for u in kept) > overlap or not _fits([*kept, unit], size, limit):
                    break
                carried = kept
            current, fresh = carried, 0
        current.append(unit)
        fresh += 1
    if current and fresh:
        close()
    return chunks
