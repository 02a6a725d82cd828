"""Quality checks on a step's output. Pure functions: they run inside workflow code."""

from __future__ import annotations

import functools
import re

from convergio.graphflow.template import QualitySpec

_SCORE = re.compile(r"SCORE:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


# A heading's own number: "1.", "2)", "1.2", "3 " (as in "## 1. Market size").
_NUMBER = r"(?:\d+(?:\.\d+)*[.)]?\s+)?"


def has_section(text: str, section: str, *, legacy: bool = False) -> bool:
    """A Markdown heading (any level) or a bold line naming the section, optionally numbered.
    ``legacy``: the matching of runs started before headings could be numbered or end in
    punctuation (see the workflow's SECTION_MATCH_PATCH)."""
    return _section_heading(section, legacy).search(text) is not None


@functools.lru_cache(maxsize=256)
def _section_heading(section: str, legacy: bool) -> re.Pattern[str]:
    r"""Compiled once per section name: inside the workflow sandbox, ``re``'s own per-call
    pattern lookup is several times slower than the search itself.

    The name must not run on into a longer word; ``(?!\w)`` rather than ``\b``, which never
    matches after a name ending in punctuation ("Risks (top 5)", "C++", "KPIs?").
    """
    name = re.escape(section.strip())
    if legacy:
        return re.compile(rf"^\s*(?:#{{1,6}}\s*{name}\b|\*\*{name}\*\*)", re.IGNORECASE | re.MULTILINE)
    return re.compile(
        rf"^\s*(?:#{{1,6}}\s*{_NUMBER}{name}(?!\w)|\*\*{_NUMBER}{name}\*\*)", re.IGNORECASE | re.MULTILINE
    )


def output_problems(text: str, spec: QualitySpec | None, *, legacy: bool = False) -> list[str]:
    """What the output lacks; empty when it passes the template's own checks."""
    if spec is None:
        return []
    problems = [
        f"missing section '{s}'" for s in spec.required_sections if not has_section(text, s, legacy=legacy)
    ]
    words = len(text.split())
    if words < spec.min_length:
        problems.append(f"too short: {words} words, at least {spec.min_length} needed")
    return problems


def review_score(text: str) -> float | None:
    """The reviewer's ``SCORE: n`` (0–10), or None if it gave none."""
    match = _SCORE.search(text)
    if match is None:
        return None
    return min(10.0, float(match.group(1)))


def review_instruction(step_title: str, draft: str, sections: list[str]) -> str:
    wanted = f" It should cover: {', '.join(sections)}." if sections else ""
    return (
        f"Review the draft of '{step_title}' below for accuracy, completeness and clarity.{wanted} "
        "Answer with a line 'SCORE: <0-10>' and then the fixes it needs.\n\n"
        f"--- draft ---\n{draft}"
    )
