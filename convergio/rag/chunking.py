"""Token-aware chunking with overlap: chunks of about N tokens that end where sentences end.

Tokens are cl100k_base tokens counted offline (``convergio.agents.tokens``). A chunk is
filled with whole sentences; the next chunk starts with the last sentences of the one
before (up to ``overlap`` tokens), so a fact that straddles a boundary is found whole
in one of them. A sentence longer than a chunk is cut on token boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from convergio.agents.tokens import chunk_text_by_tokens, count_tokens

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9#*-])")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    tokens: int


def _units(text: str, size: int) -> list[tuple[str, int]]:
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


def chunk_text(text: str, tokens_per_chunk: int = 200, overlap: int = 40) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``tokens_per_chunk`` tokens (plus one separator each)."""
    size = max(tokens_per_chunk, 1)
    overlap = min(max(overlap, 0), size // 2)
    chunks: list[Chunk] = []
    current: list[tuple[str, int]] = []
    current_tokens = 0
    fresh = 0  # units in `current` that are not overlap from the previous chunk

    def close() -> None:
        body = ""
        for index, (unit, _) in enumerate(current):
            after_heading = index > 0 and current[index - 1][0].startswith("#")
            body += ("" if index == 0 else "\n" if unit.startswith("#") or after_heading else " ") + unit
        chunks.append(Chunk(ordinal=len(chunks), text=body, tokens=count_tokens(body)))

    for unit, tokens in _units(text, size):
        if current and current_tokens + tokens > size:
            close()
            carried: list[tuple[str, int]] = []
            carried_tokens = 0
            for previous in reversed(current):
                if carried_tokens + previous[1] > overlap or carried_tokens + previous[1] + tokens > size:
                    break
                carried.insert(0, previous)
                carried_tokens += previous[1]
            current, current_tokens, fresh = carried, carried_tokens, 0
        current.append((unit, tokens))
        current_tokens += tokens
        fresh += 1
    if current and fresh:
        close()
    return chunks
