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


def test_a_section_name_may_end_in_punctuation() -> None:
    """A trailing ``\\b`` never matched after ')', '+' or '?': such sections could never be satisfied."""
    assert has_section("## Risks (top 5)\n- churn", "Risks (top 5)")
    assert has_section("# C++\nTemplates.", "C++")
    assert has_section("Intro.\n## KPIs?\n", "KPIs?")
    assert has_section("**Risks (top 5)**", "Risks (top 5)")
    assert not has_section("## Risks (top 50)", "Risks (top 5)")  # still not a prefix of a longer name
    assert not has_section("## C++x", "C++")


def test_a_numbered_heading_names_its_section() -> None:
    """Models number their headings; the number is not part of the section's name."""
    for heading in ("## 1. Market size", "### 2) Market size", "## 1.2 Market size", "**3. Market size**"):
        assert has_section(f"Intro.\n{heading}\nBig.", "Market size"), heading
    assert not has_section("## 1. Market sizes", "Market size")
    assert not has_section("1. Market size", "Market size")  # a list item is not a heading
    assert has_section("## 2024 outlook", "2024 outlook")  # a name that starts with a number still matches
