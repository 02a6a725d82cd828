"""Text normalisation for screening: undo obfuscation, decode embedded encodings.

:func:`normalize` returns the canonical text (NFKC, zero-width and bidi controls removed,
Cyrillic/Greek look-alikes mapped to Latin) plus *variants*: other readings of the same text
that the rules screen as well, each with a note saying how it was obtained (``"base64"``,
``"leetspeak"``, ...). A hit found only in a variant is reported with that note.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote

# Zero-width, invisible and bidirectional control characters (used to split or reorder words).
_INVISIBLE = dict.fromkeys(
    [
        0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E,
        *range(0x200B, 0x2010),  # zero-width space/joiners, LRM, RLM
        *range(0x202A, 0x202F),  # LRE, RLE, PDF, LRO, RLO
        *range(0x2060, 0x2065),  # word joiner, invisible operators
        *range(0x2066, 0x206A),  # LRI, RLI, FSI, PDI
        0x3164, 0xFEFF, 0xFFA0,
        *range(0xE0000, 0xE0080),  # tag characters ("ASCII smuggling")
    ]
)

# Common Cyrillic and Greek look-alikes of Latin letters (a subset of Unicode confusables).
_CONFUSABLES = {
    # Cyrillic lower
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "ь": "b", "п": "n", "г": "r",
    # Cyrillic upper
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Һ": "H",
    "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I",
    # Greek lower
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "s",
    # Greek upper
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin-ish symbols NFKC keeps
    "ı": "i", "ȷ": "j", "ℓ": "l",
}
# One character for one: spans found in mapped text apply to the text itself (redaction uses that).
CONFUSABLE_TABLE = str.maketrans(_CONFUSABLES)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# A word mixing letters with leet digits/symbols, e.g. "1gn0re", "pr3v10us", "@dmin".
_LEET_WORD = re.compile(r"(?<![\w@$])(?=[\w@$]*[A-Za-z])(?=[\w@$]*[0134579@$])[\w@$]{3,20}(?![\w@$])")
# Letters spaced out to dodge word matching: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e".
_SPACED = re.compile(r"(?<!\w)(?:[A-Za-z][ .\-_*·]){3,}[A-Za-z](?!\w)")

_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{12,}={0,2}")
_B32 = re.compile(r"(?<![A-Z2-7])[A-Z2-7]{16,}={0,6}")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])")
_HEX_ESCAPED = re.compile(r"(?:\\x[0-9A-Fa-f]{2}){6,}")
_URL_ENCODED = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+-]){6,}")
_ROT13_HINT = re.compile(r"\brot-?13\b", re.I)
_COMMON_WORDS = re.compile(
    r"\b(?:the|and|you|your|all|to|of|is|are|ignore|previous|instructions|system|prompt|password|"
    r"send|secret|key|now|this|that|with|for|print|reveal|rules)\b",
    re.I,
)


@dataclass(frozen=True)
class Variant:
    """Another reading of the text, screened like the text itself."""

    text: str
    note: str  # how it was obtained: "base64", "hex", "leetspeak", ...


@dataclass
class Normalized:
    text: str  # the canonical text
    variants: list[Variant] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # obfuscation removed from the canonical text

    def readings(self) -> list[Variant]:
        """The canonical text first, then every variant."""
        return [Variant(self.text, ""), *self.variants]


def strip_invisible(text: str) -> str:
    """Remove zero-width, invisible and bidi control characters."""
    return text.translate(_INVISIBLE)


def canonical(text: str) -> str:
    """NFKC, invisible characters removed, confusables mapped (no decoding)."""
    text = unicodedata.normalize("NFKC", text)
    text = strip_invisible(text)
    return text.translate(CONFUSABLE_TABLE)


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch in string.printable or (ch.isprintable() and ord(ch) > 127))
    return good / len(text)


def _plausible_text(raw: bytes) -> str | None:
    """Decoded bytes that read as text: valid UTF-8, printable, with some letters and spaces."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 6 or _printable_ratio(text) < 0.95:
        return None
    letters = sum(ch.isalpha() for ch in text)
    if letters / len(text) < 0.3:  # commands and URLs are punctuation-heavy
        return None
    # Words, not random letters: at least one space or punctuation, or a short single token.
    if " " not in text and len(text) > 24 and not re.search(r"[/|;:=.(]", text):
        return None
    return text


def _decode_b64(segment: str) -> str | None:
    core = segment.rstrip("=")
    # Short segments only with their padding: a bare 12-character word is rarely base64.
    if len(core) < (12 if segment.endswith("=") else 16) or core.isdigit() or core.isalpha() and (core.islower() or core.isupper()):
        return None  # plain words or numbers, not base64
    padded = core + "=" * (-len(core) % 4)
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(padded.replace("-", "+").replace("_", "/") if decoder is base64.b64decode else padded)
        except (binascii.Error, ValueError):
            continue
        text = _plausible_text(raw)
        if text:
            return text
    return None


def _decode_b32(segment: str) -> str | None:
    core = segment.rstrip("=")
    try:
        raw = base64.b32decode(core + "=" * (-len(core) % 8))
    except (binascii.Error, ValueError):
        return None
    return _plausible_text(raw)


def _decode_hex(segment: str) -> str | None:
    try:
        raw = bytes.fromhex(segment.replace("\\x", ""))
    except ValueError:
        return None
    return _plausible_text(raw)


def _rot13_reading(text: str) -> str | None:
    """The ROT13 reading when it has clearly more common English words than the text."""
    decoded = codecs.decode(text, "rot13")
    before, after = len(_COMMON_WORDS.findall(text)), len(_COMMON_WORDS.findall(decoded))
    if _ROT13_HINT.search(text) and after >= 2 or after >= 3 and after > 2 * before + 1:
        return decoded
    return None


def decoded_segments(text: str) -> list[Variant]:
    """Every embedded encoded segment that decodes to plausible text, with its encoding."""
    found: list[Variant] = []
    seen: set[str] = set()

    def add(decoded: str | None, note: str) -> None:
        if decoded and decoded not in seen:
            seen.add(decoded)
            found.append(Variant(decoded, note))

    for match in _HEX_ESCAPED.finditer(text):
        add(_decode_hex(match.group()), "hex")
    for match in _HEX.finditer(text):
        add(_decode_hex(match.group()), "hex")
    for match in _B32.finditer(text):
        add(_decode_b32(match.group()), "base32")
    for match in _B64.finditer(text):
        if not _HEX.fullmatch(match.group()):
            add(_decode_b64(match.group()), "base64")
    if text.count("%") >= 3:
        for match in _URL_ENCODED.finditer(text):
            segment = match.group()
            if segment.count("%") >= 3:
                add(unquote(segment.replace("+", " ")), "url-encoding")
    add(_rot13_reading(text), "rot13")
    return found


def normalize(text: str, *, max_depth: int = 2) -> Normalized:
    """The canonical text and its variants (decoded segments, de-leeted, de-spaced)."""
    nfkc = unicodedata.normalize("NFKC", text)
    notes: list[str] = []
    if nfkc != text:
        notes.append("unicode compatibility forms normalised (NFKC)")
    visible = strip_invisible(nfkc)
    if visible != nfkc:
        notes.append(f"{len(nfkc) - len(visible)} zero-width/bidi control characters removed")
    mapped = visible.translate(CONFUSABLE_TABLE)
    if mapped != visible and re.search(r"[A-Za-z]", visible):
        notes.append("Cyrillic/Greek look-alike letters mapped to Latin")
    result = Normalized(mapped, notes=notes)

    seen = {mapped}

    def add(variant: Variant) -> None:
        if variant.text not in seen:
            seen.add(variant.text)
            result.variants.append(variant)

    despaced = _SPACED.sub(lambda m: re.sub(r"[ .\-_*·]", "", m.group()), mapped)
    if despaced != mapped:
        add(Variant(despaced, "spaced-out letters joined"))
    deleet = _LEET_WORD.sub(lambda m: m.group().translate(_LEET), despaced)
    if deleet != despaced:
        add(Variant(deleet, "leetspeak"))

    frontier = [Variant(mapped, "")]
    for _ in range(max_depth):
        next_frontier: list[Variant] = []
        for reading in frontier:
            for decoded in decoded_segments(reading.text):
                note = f"{reading.note} > {decoded.note}" if reading.note else decoded.note
                variant = Variant(canonical(decoded.text), note)
                if variant.text not in seen:
                    add(variant)
                    next_frontier.append(variant)
        frontier = next_frontier
    return result
