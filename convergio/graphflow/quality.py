"""Quality checks on a step's output. Pure functions: they run inside workflow code."""

from __future__ import annotations

import functools
import re

from convergio.graphflow.template import QualitySpec

_SCORE = re.compile(r"SCORE:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def has_section(text: str, section: str) -> bool:
    """A Markdown heading (any level) or a bold line naming the section."""
    return _section_heading(section).search(text) is not None


@functools.lru_cache(maxsize=256)
def _section_heading(section: str) -> re.Pattern[str]:
    """Compiled once per section name: inside the workflow sandbox, ``re``'s own per-call
    pattern lookup is several times slower than the search itself."""
    name = re.escape(section.strip())
    return re.compile(rf"^\s*(?:#{{1,6}}\s*{name}\b|\*\*{name}\*\*)", re.IGNORECASE | re.MULTILINE)


def output_problems(text: str, spec: QualitySpec | None) -> list[str]:
    """What the output lacks; empty when it passes the template's own checks."""
    if spec is None:
        return []
    problems = [f"missing section '{s}'" for s in spec.required_sections if not has_section(text, s)]
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
