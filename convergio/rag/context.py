"""Dynamic context building: the best hits, numbered, until the token budget is spent.

The agent gets one context message of paragraphs that each start with a ``Source: S<n>``
line, the convention the agents (and the offline writer) cite as ``[source: S<n>]``;
the instruction gets a legend naming what each marker is.
"""

from __future__ import annotations

from convergio.agents.tokens import count_tokens, truncate_to_tokens
from convergio.rag.models import Hit, SourceRef

MIN_EXCERPT_TOKENS = 40
ELLIPSIS = " …"


def _one_paragraph(text: str) -> str:
    """Blank lines would end the paragraph the ``Source:`` line labels."""
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def build_context(hits: list[Hit], max_tokens: int) -> tuple[str, list[SourceRef], int]:
    """(context text, the sources in it, its tokens): hits in score order, cut to the budget."""
    paragraphs: list[str] = []
    sources: list[SourceRef] = []
    used = 0
    for hit in hits:
        marker = f"S{len(sources) + 1}"
        header = f"Source: {marker}"
        body = _one_paragraph(hit.content)
        cost = count_tokens(header) + count_tokens(body) + 2
        if used + cost > max_tokens:
            room = max_tokens - used - count_tokens(header) - 2
            if room < MIN_EXCERPT_TOKENS:
                break
            body, _ = truncate_to_tokens(body, room - count_tokens(ELLIPSIS))
            body = body.rstrip() + ELLIPSIS
            cost = count_tokens(header) + count_tokens(body) + 2
        paragraphs.append(f"{header}\n{body}")
        sources.append(
            SourceRef(marker=marker, kind=hit.kind, source=hit.source, score=round(hit.score, 4),
                      excerpt=_excerpt(body))
        )
        used += cost
    text = "\n\n".join(paragraphs)
    return text, sources, count_tokens(text)


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def legend(sources: list[SourceRef]) -> str:
    """The line appended to the instruction: what each marker is, and how to cite it."""
    names = "; ".join(
        f"{s.marker} = {s.source if s.kind == 'chunk' else 'earlier ' + s.source}" for s in sources
    )
    return f"Knowledge sources are given as context ({names}). Cite each one you use as [source: S1]."
