"""Turn files (text, Markdown, HTML, PDF) into plain text, with a clear error when that fails.

Markdown may start with YAML front matter (``title``, ``importance``, any other keys
become metadata), so a knowledge base can say which documents matter more.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import yaml

SUPPORTED_SUFFIXES: dict[str, str] = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".html": "html", ".htm": "html", ".pdf": "pdf",
}
CONTENT_TYPES: dict[str, str] = {
    "text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown",
    "text/html": "html", "application/pdf": "pdf",
}


class DocumentError(ValueError):
    """A file that cannot become a knowledge document; the message names the file and why."""


@dataclass
class ReadDocument:
    text: str
    title: str = ""
    importance: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def kind_of(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise DocumentError(f"{name}: unsupported file type '{suffix or '(none)'}'; supported: {supported}")
    return SUPPORTED_SUFFIXES[suffix]


def missing_path(path: Path) -> str:
    """The error for a path with nothing at it (a typo, most likely)."""
    return f"{path}: no such file or folder"


def read_path(path: Path) -> ReadDocument:
    """Read one file; a missing, unreadable, unsupported or empty file raises ``DocumentError``.
    A missing path is said so first: its type (often none, as for ``/nonexistent``) is no matter."""
    if not path.exists():
        raise DocumentError(missing_path(path))
    kind = kind_of(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return parse_bytes(data, kind, str(path))


def parse_bytes(data: bytes, kind: str, name: str) -> ReadDocument:
    if kind == "pdf":
        document = ReadDocument(text=_pdf_text(data, name))
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DocumentError(f"{name}: not UTF-8 text") from None
        document = parse_text(text, kind, name)
    if not document.text.strip():
        raise DocumentError(f"{name}: the file is empty (no text to ingest)")
    return document


def parse_text(text: str, kind: str, name: str) -> ReadDocument:
    if kind == "markdown":
        return _markdown(text, name)
    if kind == "html":
        return _html(text)
    return ReadDocument(text=text)


def _front_matter(text: str) -> tuple[str, str] | None:
    """(YAML, body) when ``text`` opens with front matter: a first line that is exactly ``---``
    and a later line that is exactly ``---`` (trailing blanks allowed). A longer rule such as
    ``----------`` is a Markdown thematic break, not a delimiter, and so is a line that only
    starts with ``---`` (inside a quoted YAML value, say)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return "".join(lines[1:index]), "".join(lines[index + 1 :])
    return None


def _markdown(text: str, name: str) -> ReadDocument:
    split = _front_matter(text)
    if split is None:
        return ReadDocument(text=text, title=_first_heading(text))
    head, body = split
    try:
        meta = yaml.safe_load(head) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"{name}: invalid front matter ({exc})") from None
    if not isinstance(meta, dict):
        raise DocumentError(f"{name}: front matter must be a mapping")
    importance = meta.pop("importance", None)
    if importance is not None and (not isinstance(importance, (int, float)) or not 0 <= importance <= 1):
        raise DocumentError(f"{name}: front matter 'importance' must be a number from 0 to 1")
    title = str(meta.pop("title", "") or _first_heading(body))
    metadata = {str(k): _json_value(v) for k, v in meta.items() if v is not None}
    return ReadDocument(text=body, title=title, importance=importance, metadata=metadata)


def _json_value(value: Any) -> Any:
    """A front matter value as JSON: YAML dates and times become ISO 8601 strings (as a template's
    ``filters: {date: "2025-09-30"}`` writes them), lists and mappings are kept, anything else
    YAML can build (binary, sets) becomes its text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return str(value)


def _first_heading(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


class _TextExtractor(HTMLParser):
    """Body text and the document's <title>.

    The head ends at ``</head>`` or, as browsers parse it, at the first element or text that
    cannot be in a head (``<body>``, ``<p>``...): a page that never closes its head keeps its body.
    """

    _SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "noscript", "template"})
    _HEAD_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"head", "title", "meta", "link", "base", "script", "style", "noscript", "template"}
    )
    _FOREIGN: ClassVar[frozenset[str]] = frozenset({"svg", "math"})  # their <title> is not the page's
    _BLOCK: ClassVar[frozenset[str]] = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._foreign = 0
        self._in_head = False
        self._in_title = False
        self._in_foreign_title = False
        self._title_done = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "head":
            self._in_head = True
        elif self._in_head and tag not in self._HEAD_ONLY:
            self._in_head = False
        if tag in self._SKIP:
            self._skipping += 1
        if tag in self._FOREIGN:
            self._foreign += 1
        if tag == "title" and self._foreign:
            self._in_foreign_title = True
        elif tag == "title" and not self._title_done:
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "body", "html"):
            self._in_head = False
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        if tag in self._FOREIGN and self._foreign:
            self._foreign -= 1
        if tag == "title":
            self._title_done = self._title_done or self._in_title
            self._in_title = self._in_foreign_title = False
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data.strip()
        elif self._skipping or self._in_foreign_title:
            return
        elif self._in_head and data.strip():
            self._in_head = False  # text cannot be in a head: the body has begun
            self.parts.append(data)
        elif not self._in_head:
            self.parts.append(data)


def _html(text: str) -> ReadDocument:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return ReadDocument(text="".join(parser.parts).strip(), title=parser.title)


def _pdf_text(data: bytes, name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, OSError) as exc:
        raise DocumentError(f"{name}: cannot read the PDF ({exc})") from None
