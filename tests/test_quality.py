"""Quality checks on step outputs (pure functions the workflow calls)."""

from __future__ import annotations

from convergio.graphflow.quality import has_section, output_problems
from convergio.graphflow.template import QualitySpec


def test_a_section_is_a_heading_or_a_bold_line_naming_it() -> None:
    text = "Intro line.\n\n### Market Size\nBig.\n**Risks (top 3)**\n- churn\nWe discuss pricing here."
    assert has_section(text, "market size")  # any heading level, any case
    assert has_section(text, " Risks (top 3) ")  # bold line; regex characters taken literally
    assert not has_section(text, "Pricing")  # a mention in a sentence is not a section
    assert not has_section(text, "Market Sizes")  # the heading must name it, not a prefix of it
    assert not has_section(text, "Risks (top 5)")


def test_output_problems_name_each_missing_section_and_a_short_text() -> None:
    spec = QualitySpec(required_sections=["Summary", "Risks"], min_length=20)
    problems = output_problems("## Summary\nShort.", spec)
    assert problems == ["missing section 'Risks'", "too short: 3 words, at least 20 needed"]
    assert output_problems("## Summary\n## Risks\n" + "word " * 20, spec) == []
