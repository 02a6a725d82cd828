"""Write a grounded Markdown answer from a role, a task and supporting material.

This is what the offline model client says instead of generating text: every sentence
in the answer is copied from the material (or, when there is none, from the task), so
nothing is invented. Sentences are ranked by how many content-word stems they share
with a section's name and with the task. All functions are pure and deterministic:
the same input gives the same output byte for byte.

Source markers are kept with their sentences and written as ``[source: xyz]``:

- an inline ``[source: xyz]`` or ``(source: xyz)`` belongs to the sentence it is in or
  directly follows;
- a line of its own ``Source: xyz`` labels lines of the same paragraph (block of text
  between blank lines): the lines after it, until the next source line; but when the
  paragraph ends with a source line (and does not start with one), the source lines are
  footers and label the lines before them, back to the previous source line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_SECTIONS: tuple[str, ...] = ("Summary", "Key points", "Recommendation")
SENTENCES_PER_SECTION = 4
MAX_SECTIONS = 12
MAX_SECTION_NAME_WORDS = 8
SUMMARY_WORDS = 15
MAX_ROLE_WORDS = 8

NO_CONTEXT_NOTE = "_No supporting context was provided: the sections below only restate the task._"
EMPTY_SECTION_GROUNDED = "- The provided context does not address this."
EMPTY_SECTION_UNGROUNDED = "- The task does not say anything specific about this."

STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves
    """.split()
)

# Words that shape a request rather than say what it is about; ignored in the task query.
INSTRUCTION_WORDS: frozenset[str] = frozenset(
    """
    please write provide give include including section sections heading headings brief
    short use using following below answer respond response reply draft prepare make
    """.split()
)

# (suffix, replacement) in priority order; the first that leaves a stem of 3+ letters wins.
_SUFFIX_RULES: tuple[tuple[str, str], ...] = (
    ("iness", "y"),
    ("ational", ""),
    ("ations", ""),
    ("ation", ""),
    ("ings", ""),
    ("ing", ""),
    ("ated", ""),
    ("ates", ""),
    ("ate", ""),
    ("edly", ""),
    ("ied", "y"),
    ("ies", "y"),
    ("ed", ""),
    ("es", ""),
    ("ers", "er"),
    ("ly", ""),
    ("s", ""),
    ("e", ""),
)

_ABBREVIATIONS: frozenset[str] = frozenset(
    "mr mrs ms dr prof inc ltd co corp vs etc e.g i.e st jr sr no fig approx".split()
)

_WORD = re.compile(r"[a-z0-9]+")
_INLINE_SOURCE = re.compile(r"[\[(]\s*sources?\s*:\s*([^\])\n]+?)\s*[\])]", re.IGNORECASE)
_SOURCE_LINE = re.compile(
    r"^\s*(?:[-*>]\s*)?"  # optional bullet or quote
    r"(?:\*\*|__)?sources?(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*"  # "Source:", maybe in bold
    r"(.{1,160}?)\s*$",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$")
# Level-1 headings title a request; levels 2 to 6 name the sections it asks for.
_REQUESTED_HEADING = re.compile(r"^[ \t]{0,3}#{2,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_OWN_HEADER = re.compile(r"^\*\*.+\*\* — perspective on: ")

# Inline source markers are swapped for placeholders made of private-use characters
# while a paragraph is cut into sentences, so they stay with the sentence they follow.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_MARK_OPEN}(\\d+){_MARK_CLOSE}")
_SENTENCE_END = re.compile(
    r"[.!?]+[\"'”’)\]]*"  # end punctuation, maybe closing quotes or brackets
    rf"((?:\s*{_MARK_OPEN}\d+{_MARK_CLOSE})*)"  # placeholders that belong to this sentence
    r"\s+(?=[\"'“‘(\[]?[A-Z0-9\u00c0-\u024f*_])"  # the next sentence starts with a capital
)

_SECTION_PHRASE = re.compile(
    r"\b(?:sections?|headings?)\b[^:\n.]{0,40}:[ \t]*(?P<inline>[^\n]*)"
    r"|\b(?:include|including|cover|covering)\b[^:\n.]{0,20}:[ \t]*(?P<inline2>[^\n]*)",
    re.IGNORECASE,
)
_QUOTED_SECTIONS = re.compile(
    r"\b(?:sections?|headings?)\b[^\n.:]*?((?:[\"“][^\"”\n]{1,80}[\"”][^\"“\n.]*)+)", re.IGNORECASE
)
_QUOTED = re.compile(r"[\"“]([^\"”\n]{1,80})[\"”]")
_DANGLING_WORDS = re.compile(
    r"(?:\s+(?:with|using|in|into|under|the|following|these|those|and|of|\d+|two|three|four|five|six))*"
    r"[ \t]*$",
    re.IGNORECASE,
)
_ROLE_PHRASE = re.compile(
    r"\b(?:you are|you're|act as|acting as|answer as|respond as|speak as)\s+"
    r"(?:the |a |an |our |my )?(?P<role>[^,.;:!?\n(]+)",
    re.IGNORECASE,
)
_ROLE_END = re.compile(
    r"\s+(?:who|that|which|and you|responsible|in charge|working|whose|with|of (?:an?|the|our|your))\b.*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the material, its sources and where it appeared (for tie-breaking)."""

    text: str
    sources: tuple[str, ...]
    position: int

    def render(self) -> str:
        markers = "".join(f" [source: {source}]" for source in self.sources)
        return f"{self.text}{markers}"


# --- words -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16384)
def stem(word: str) -> str:
    """A crude suffix-stripping stem: enough to match "hiring", "hires" and "hire"."""
    for suffix, replacement in _SUFFIX_RULES:
        if suffix in ("s", "es") and word.endswith("ss"):
            continue
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            root = word[: len(word) - len(suffix)] + replacement
            return _undouble_final_consonant(root) if not replacement else root
    return word


def _undouble_final_consonant(root: str) -> str:
    if len(root) > 3 and root[-1] == root[-2] and root[-1] not in "aeiouslz":
        return root[:-1]
    return root


@functools.lru_cache(maxsize=4096)
def content_stems(text: str, ignore: frozenset[str] = frozenset()) -> frozenset[str]:
    """Stems of the words that carry meaning: lowercase, stop words and 1-letter words dropped.

    Cached: the same sentences (knowledge, earlier answers) are scored turn after turn."""
    words = _WORD.findall(text.lower())
    return frozenset(
        stem(word)
        for word in words
        if word not in STOP_WORDS and word not in ignore and (len(word) > 1 or word.isdigit())
    )


# --- sentences ---------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, each with its ``[source: ...]`` markers appended."""
    return [sentence.render() for sentence in extract_sentences(text)]


def extract_sentences(text: str, first_position: int = 0) -> list[Sentence]:
    """Sentences of ``text`` in order; headings and our own answer header are skipped."""
    sentences: list[Sentence] = []
    for block in re.split(r"\n[ \t]*\n", text):
        for unit, line_source in _units_with_line_sources(block):
            for sentence_text, sources in _split_unit(unit):
                all_sources = sources or ((line_source,) if line_source else ())
                sentences.append(Sentence(sentence_text, all_sources, first_position + len(sentences)))
    return sentences


def _units_with_line_sources(block: str) -> list[tuple[str, str | None]]:
    """Paragraph text and bullet items of a block, each with the ``Source:`` line that labels it."""
    items = _block_items(block)
    footer_mode = bool(items) and items[-1][0] == "source" and items[0][0] != "source"
    ordered = list(reversed(items)) if footer_mode else items
    labelled: list[tuple[str, str | None]] = []
    current: str | None = None
    for kind, value in ordered:
        if kind == "source":
            current = value
        else:
            labelled.append((value, current))
    return list(reversed(labelled)) if footer_mode else labelled


def _block_items(block: str) -> list[tuple[str, str]]:
    """("unit", text) and ("source", name) items; wrapped lines of a paragraph are joined."""
    items: list[tuple[str, str]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            items.append(("unit", " ".join(paragraph)))
            paragraph.clear()

    for line in block.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        source = _SOURCE_LINE.match(line)
        if source and not _INLINE_SOURCE.search(line):
            flush()
            items.append(("source", source.group(1)))
        elif _HEADING.match(line) or _OWN_HEADER.match(stripped) or stripped == NO_CONTEXT_NOTE:
            flush()
        elif _BULLET.match(line):
            flush()
            paragraph.append(_BULLET.sub("", line, count=1).strip())
            flush()
        else:
            paragraph.append(stripped)
    flush()
    return items


def _split_unit(unit: str) -> list[tuple[str, tuple[str, ...]]]:
    """Split a paragraph into sentences; inline source markers stay with their sentence."""
    sources: list[str] = []

    def to_placeholder(match: re.Match[str]) -> str:
        sources.append(match.group(1).strip())
        return f"{_MARK_OPEN}{len(sources) - 1}{_MARK_CLOSE}"

    marked = _INLINE_SOURCE.sub(to_placeholder, unit)
    pieces = _cut_at_sentence_ends(marked)
    sentences: list[tuple[str, tuple[str, ...]]] = []
    for piece in pieces:
        piece_sources = tuple(sources[int(index)] for index in _PLACEHOLDER.findall(piece))
        text = _tidy(_PLACEHOLDER.sub("", piece))
        if _WORD.search(text.lower()):
            sentences.append((text, piece_sources))
        elif sentences and piece_sources:
            previous_text, previous_sources = sentences[-1]
            sentences[-1] = (previous_text, previous_sources + piece_sources)
    return sentences


def _cut_at_sentence_ends(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _ends_with_abbreviation(text[start : match.start() + 1]):
            continue
        pieces.append(text[start : match.end(1)])
        start = match.end()
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()]


def _ends_with_abbreviation(text: str) -> bool:
    last_word = text.rsplit(None, 1)[-1].lower().rstrip(".") if text.strip() else ""
    return last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())


def _tidy(text: str) -> str:
    """Collapse whitespace and remove the space a removed marker leaves before punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([.,;:!?])", r"\1", text)


# --- the request -------------------------------------------------------------------------


def extract_requested_sections(instruction: str) -> list[str]:
    """Section names the instruction asks for, in order; empty when it asks for none.

    Recognised: Markdown headings (``## Revenue``); "sections: A, B and C" or
    "include: A, B, C" (also "the following sections:" followed by a bullet list); and
    quoted names after "sections" ("sections "Revenue" and "Hiring""). A list without
    commas is split on "and", so "Risks and mitigations" asks for two sections; use
    headings or bullets for names that contain "and".
    """
    names, _ = _find_section_request(instruction)
    return names


def _find_section_request(instruction: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The requested section names and the character spans of the request in the text."""
    headings = [(m.group(1), m.span()) for m in _REQUESTED_HEADING.finditer(instruction)]
    if headings:
        return _clean_names(name for name, _ in headings), [span for _, span in headings]
    phrase = _SECTION_PHRASE.search(instruction)
    if phrase:
        group = "inline" if phrase.group("inline") is not None else "inline2"
        inline = phrase.group(group)
        if inline.strip():
            list_text = _inline_list_text(inline)
            names = _clean_names(_split_inline_list(list_text))
            if names:
                end = phrase.start(group) + len(list_text)
                end += 1 if instruction[end : end + 1] == "." else 0
                return names, [(phrase.start(), end)]
        else:
            bullets, end = _bullets_after(instruction, phrase.end())
            names = _clean_names(bullets)
            if names:
                return names, [(phrase.start(), end)]
    quoted = _QUOTED_SECTIONS.search(instruction)
    if quoted:
        names = _clean_names(_QUOTED.findall(quoted.group(1)))
        if names:
            return names, [quoted.span()]
    return [], []


def _inline_list_text(rest_of_line: str) -> str:
    """The list part of "A, B and C. Keep it short.": up to the first full stop."""
    match = re.search(r"(?<=[A-Za-z0-9\"”)])\.(?:\s|$)", rest_of_line)
    return rest_of_line[: match.start()] if match else rest_of_line


def _split_inline_list(text: str) -> list[str]:
    """ "A, B and C" -> ["A", "B", "C"]; also "A, B, and C" and "A; B"."""
    text = text.strip()
    parts = [part.strip() for part in re.split(r"[,;]", text)]
    if len(parts) > 1 and not re.match(r"(?:and|&)\s", parts[-1], re.IGNORECASE):
        parts[-1:] = re.split(r"\s+(?:and|&)\s+", parts[-1])
    elif len(parts) == 1:
        parts = re.split(r"\s+(?:and|&)\s+", parts[0])
    return [re.sub(r"^(?:and|&)\s+", "", part, flags=re.IGNORECASE) for part in parts]


def _bullets_after(text: str, position: int) -> tuple[list[str], int]:
    """Consecutive bullet items starting on the line after ``position``, and where they end."""
    items: list[str] = []
    end = position
    offset = text.find("\n", position)
    while offset != -1:
        line_end = text.find("\n", offset + 1)
        line = text[offset + 1 : line_end if line_end != -1 else len(text)]
        if not _BULLET.match(line):
            break
        items.append(_BULLET.sub("", line, count=1))
        end = line_end if line_end != -1 else len(text)
        offset = line_end
    return items, end


def _clean_names(raw_names: Iterable[str]) -> list[str]:
    """Strip quotes, emphasis and punctuation; drop empties, duplicates and run-on text."""
    names: list[str] = []
    seen: set[str] = set()
    for raw in raw_names:
        name = re.sub(r"[*_`#\"“”]", "", raw).strip().strip(".:;,'’ ").strip()
        if not name or len(name.split()) > MAX_SECTION_NAME_WORDS or name.lower() in seen:
            continue
        seen.add(name.lower())
        names.append(name)
    return names[:MAX_SECTIONS]


def task_without_section_request(task: str) -> str:
    """The task with the part that only describes the answer's layout removed."""
    _, spans = _find_section_request(task)
    for start, end in sorted(spans, reverse=True):
        task = _end_dangling_sentence(task[:start]) + task[end:]
    return task


def _end_dangling_sentence(text: str) -> str:
    """ "Assess Q3 with the following " -> "Assess Q3." once the layout request is cut out."""
    trimmed = _DANGLING_WORDS.sub("", text)
    if trimmed.strip() and not trimmed.rstrip().endswith((".", "!", "?", ":")) and not text.endswith("\n"):
        return trimmed.rstrip() + ". "
    return trimmed if trimmed.strip() else ""


def role_title(system_message: str) -> str:
    """A short role name from a system message: "You are the CFO of Acme. ..." -> "CFO of Acme"."""
    text = system_message.strip()
    if not text:
        return "Assistant"
    match = _ROLE_PHRASE.search(text)
    if match:
        role = _ROLE_END.sub("", match.group("role")).strip()
    else:
        first = extract_sentences(text)
        role = first[0].text.rstrip(".!?") if first else ""
    words = role.split()
    if not words or len(words) > MAX_ROLE_WORDS:
        return "Assistant"
    return role[0].upper() + role[1:]


def task_summary(task: str) -> str:
    """The first sentence of the task, at most ``SUMMARY_WORDS`` words, as a one-line summary."""
    sentences = extract_sentences(task_without_section_request(task))
    if not sentences:
        return "the request"
    words = sentences[0].text.rstrip(".!?:").split()
    if len(words) > SUMMARY_WORDS:
        return " ".join(words[:SUMMARY_WORDS]) + " …"
    return " ".join(words)


# --- choosing sentences ------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    sentence: Sentence
    section_hits: tuple[int, ...]
    task_hits: int


def assign_sentences(sections: list[str], candidates: list[Sentence], task: str) -> list[list[Sentence]]:
    """For each section, its sentences, best first; no sentence is used twice.

    Sentences sharing words with a section name are placed first, best matches first:
    each goes to the section it shares most with (earliest on a tie) or, when that one is
    full, the next best. The other sentences that share a word with the task or a section
    are dealt out, most relevant first: to empty sections first, then in turn. Sentences
    sharing nothing are left out, unless nothing shares anything: then all are dealt out
    in their original order, so the answer still quotes the material.
    """
    task_stems = content_stems(task, ignore=INSTRUCTION_WORDS)
    section_stems = [content_stems(name) for name in sections]
    scored = [_score(sentence, section_stems, task_stems) for sentence in _unique(candidates)]
    chosen: list[list[_Scored]] = [[] for _ in sections]
    placed: set[int] = set()
    for number, item, section in sorted(_section_matches(scored), key=_match_rank):
        if number not in placed and len(chosen[section]) < SENTENCES_PER_SECTION:
            chosen[section].append(item)
            placed.add(number)
    rest = [item for number, item in enumerate(scored) if number not in placed]
    relevant = sorted((item for item in rest if _relevance(item) > 0), key=_rank_by_relevance)
    _deal_out(relevant if relevant or placed else rest, chosen)
    return [[item.sentence for item in items] for items in chosen]


def _section_matches(scored: list[_Scored]) -> list[tuple[int, _Scored, int]]:
    """(sentence number, sentence, section index) for every section a sentence shares words with."""
    return [
        (number, item, section)
        for number, item in enumerate(scored)
        for section, hits in enumerate(item.section_hits)
        if hits > 0
    ]


def _match_rank(match: tuple[int, _Scored, int]) -> tuple[int, int, int, int]:
    number, item, section = match
    return (-item.section_hits[section], -item.task_hits, item.sentence.position, section)


def _relevance(item: _Scored) -> int:
    return item.task_hits + max(item.section_hits, default=0)


def _rank_by_relevance(item: _Scored) -> tuple[int, int]:
    return (-_relevance(item), item.sentence.position)


def _unique(sentences: list[Sentence]) -> list[Sentence]:
    seen: set[str] = set()
    unique: list[Sentence] = []
    for sentence in sentences:
        key = sentence.text.lower()
        if key not in seen:
            seen.add(key)
            unique.append(sentence)
    return unique


def _score(sentence: Sentence, section_stems: list[frozenset[str]], task_stems: frozenset[str]) -> _Scored:
    stems = content_stems(sentence.text)
    return _Scored(sentence, tuple(len(stems & names) for names in section_stems), len(stems & task_stems))


def _deal_out(items: list[_Scored], sections: list[list[_Scored]]) -> None:
    """Give each empty section one item, then go round the sections until items or room run out."""
    remaining = list(items)
    for section in sections:
        if not section and remaining:
            section.append(remaining.pop(0))
    while remaining and any(len(section) < SENTENCES_PER_SECTION for section in sections):
        for section in sections:
            if remaining and len(section) < SENTENCES_PER_SECTION:
                section.append(remaining.pop(0))


# --- the answer --------------------------------------------------------------------------


# A revision request names the sections a check found missing ("Fix: missing section 'Risks'",
# a reviewer's "Add a section 'Risks'."): the revised answer adds them.
_MISSING_SECTION = re.compile(r"(?:missing section|add a section) '([^'\n]+)'", re.IGNORECASE)


# A person's change request ("Changes requested by Ada (executive): Add the hiring plan."): the
# revised answer quotes it, as a model would say what it changed.
_CHANGE_REQUEST = re.compile(r"^Changes requested by [^:\n]+: *(\S[^\n]*)$", re.MULTILINE)
CHANGES_SECTION = "Changes requested"


def _sections_to_write(task: str) -> list[str]:
    sections = extract_requested_sections(task) or list(DEFAULT_SECTIONS)
    for name in _MISSING_SECTION.findall(task):
        if name.casefold() not in {section.casefold() for section in sections}:
            sections.append(name)
    return sections


def write_grounded_answer(role: str, task: str, material: str) -> str:
    """The Markdown answer: a role line, then the requested (or default) sections.

    ``role`` may be a short name or a whole system message. Every sentence comes from
    ``material``; with no material the task's own sentences are restated under a note
    that says so.
    """
    sections = _sections_to_write(task)
    material_sentences = extract_sentences(material)
    grounded = bool(material_sentences)
    candidates = material_sentences if grounded else extract_sentences(task_without_section_request(task))
    assigned = assign_sentences(sections, candidates, task)
    blocks = [f"**{role_title(role)}** — perspective on: {task_summary(task)}"]
    if not grounded:
        blocks.append(NO_CONTEXT_NOTE)
    empty_line = EMPTY_SECTION_GROUNDED if grounded else EMPTY_SECTION_UNGROUNDED
    for name, sentences in zip(sections, assigned):
        body = "\n".join(f"- {sentence.render()}" for sentence in sentences) or empty_line
        blocks.append(f"## {name}\n{body}")
    if requests := _CHANGE_REQUEST.findall(task):
        blocks.append(f"## {CHANGES_SECTION}\n" + "\n".join(f"- {request.strip()}" for request in requests))
    return "\n\n".join(blocks)


# --- reviewing ---------------------------------------------------------------------------

_SCORE_REQUEST = re.compile(r"SCORE:\s*<\s*0\s*-\s*10\s*>", re.IGNORECASE)
_DRAFT_MARKER = "--- draft ---"
_COVER_LIST = re.compile(r"should cover:\s*(?P<names>[^\n]+?)\.\s", re.IGNORECASE)
MIN_REVIEWED_WORDS = 40


def is_review_request(task: str) -> bool:
    """A reviewer is asked for a ``SCORE: <0-10>`` line (see ``graphflow.quality``)."""
    return bool(_SCORE_REQUEST.search(task)) and _DRAFT_MARKER in task


def write_review(task: str) -> str:
    """A deterministic review: the score is the share of the expected sections the draft
    has as headings, less a penalty for a very short draft. It checks form, not truth."""
    head, _, draft = task.partition(_DRAFT_MARKER)
    match = _COVER_LIST.search(head + " ")
    expected = [name.strip() for name in re.split(r",|\band\b", match.group("names"))] if match else []
    expected = [name for name in expected if name]
    present = [name for name in expected if re.search(rf"^#+\s*{re.escape(name)}\b", draft, re.I | re.M)]
    missing = [name for name in expected if name not in present]
    share = len(present) / len(expected) if expected else 1.0
    words = len(draft.split())
    score = round(10 * share) - (3 if words < MIN_REVIEWED_WORDS else 0)
    score = max(0, min(10, score))
    fixes = [f"{i}. Add a section '{name}'." for i, name in enumerate(missing, 1)]
    if words < MIN_REVIEWED_WORDS:
        fixes.append(f"{len(fixes) + 1}. Expand the draft: {words} words is too short to act on.")
    return f"SCORE: {score}\nFIXES: " + ("\n" + "\n".join(fixes) if fixes else "none")
