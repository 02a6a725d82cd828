"""Agent definitions: the shipped catalog, both file formats, and every error case."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from convergio.agents.catalog import (
    AgentCatalog,
    AgentCatalogError,
    UnknownAgentError,
    default_catalog,
    load_definition_file,
    shipped_definitions_dir,
)
from convergio.agents.definition import AgentDefinition

SHIPPED = {
    "chief_of_staff",
    "cfo",
    "strategic",
    "performance",
    "market_analyst",
    "risk_officer",
    "go_to_market",
    "operations",
    "product_manager",
    "reviewer",
}
DOMAINS = {
    "finance", "strategy", "market", "risk", "go_to_market", "operations", "product",
    "performance", "coordination", "quality",
}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def yaml_agent(name: str, **extra: str) -> str:
    lines = [f"name: {name}", "role: Test Agent", "system_message: You are a test agent."]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


# --- the shipped catalog -----------------------------------------------------------------------


def test_shipped_catalog_loads_all_agents() -> None:
    catalog = default_catalog()
    assert SHIPPED <= set(catalog.names())
    assert catalog.names() == sorted(catalog.names())
    assert len(catalog.all()) == len(catalog.names())
    assert all(isinstance(agent, AgentDefinition) for agent in catalog.all())
    assert "cfo" in catalog and "nobody" not in catalog
    assert default_catalog() is catalog  # cached


def test_shipped_definitions_are_complete() -> None:
    catalog = default_catalog()
    covered: set[str] = set()
    for agent in catalog.all():
        assert agent.expertise and agent.phases, agent.name
        assert 0.7 <= agent.performance <= 0.95, agent.name
        assert "[source: …]" in agent.system_message, agent.name
        assert len(agent.system_message) > 400, agent.name
        assert agent.name not in agent.collaborators
        assert set(agent.collaborators) <= set(catalog.names())
        covered |= set(agent.expertise)
    assert DOMAINS <= covered
    assert 1 <= sum(agent.fast_response for agent in catalog.all()) <= 2
    cos = catalog.get("chief_of_staff")
    assert set(cos.collaborators) == set(catalog.names()) - {"chief_of_staff"}
    assert set(cos.phases) == {"strategy", "execution", "monitoring"}
    assert "financial_model" in catalog.get("cfo").tools
    assert "finance" in catalog.get("cfo").expertise
    assert set(catalog.get("market_analyst").phases) >= {"discovery", "analysis"}
    assert "SCORE: <n>" in catalog.get("reviewer").system_message


def test_shipped_definitions_mix_yaml_and_markdown() -> None:
    files = [entry.name for entry in shipped_definitions_dir().iterdir()]
    assert sum(name.endswith(".md") for name in files) >= 2
    assert sum(name.endswith(".yaml") for name in files) >= 5
    assert default_catalog().source("reviewer").endswith("reviewer.md")


def test_unknown_agent_lists_known_names() -> None:
    with pytest.raises(UnknownAgentError) as info:
        default_catalog().get("cmo")
    assert isinstance(info.value, KeyError)
    assert "cmo" in str(info.value) and "cfo" in str(info.value)
    assert "cfo" in info.value.known


# --- formats -----------------------------------------------------------------------------------


def test_yaml_and_yml_files(tmp_path: Path) -> None:
    write(tmp_path, "alpha.yaml", yaml_agent("alpha", complexity="5", expertise="[Finance, ' Risk ']"))
    write(tmp_path, "beta.yml", yaml_agent("beta", collaborators="[alpha]", tools="[financial_model]"))
    write(tmp_path, "notes.txt", "ignored")
    catalog = AgentCatalog.from_directories(tmp_path)
    assert catalog.names() == ["alpha", "beta"]
    assert catalog.get("alpha").complexity == 5
    assert catalog.get("alpha").expertise == ["finance", "risk"]
    assert catalog.get("beta").tools == ["financial_model"]


def test_markdown_body_becomes_system_message(tmp_path: Path) -> None:
    write(
        tmp_path,
        "writer.md",
        """
        ---
        name: writer
        role: Writer
        phases: [execution]
        ---

        You write.

        Second paragraph, with `code` and a --- dash.
        """,
    )
    agent = AgentCatalog.from_directories(tmp_path).get("writer")
    assert agent.system_message == "You write.\n\nSecond paragraph, with `code` and a --- dash."
    assert agent.phases == ["execution"]


# --- errors ------------------------------------------------------------------------------------


def load_error(directory: Path) -> AgentCatalogError:
    with pytest.raises(AgentCatalogError) as info:
        AgentCatalog.from_directories(directory)
    return info.value


def test_bad_field_value_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo", complexity="7"))
    error = load_error(tmp_path)
    assert str(error) == f"{path}: complexity: Input should be less than or equal to 5"
    assert (error.file, error.field) == (str(path), "complexity")


def test_bad_list_item_has_indexed_field_path(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo", phases="[analysis, planning]"))
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}: phases[1]: Input should be 'discovery'")


def test_unknown_field(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo", temperature="0.2"))
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}: temperature: unknown field")
    assert "system_message" in str(error)  # lists the allowed fields


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", "name: cfo\nsystem_message: hi\n")
    assert str(load_error(tmp_path)) == f"{path}: role: Field required"


def test_name_must_match_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("finance_chief"))
    error = load_error(tmp_path)
    assert str(path) in str(error)
    assert error.field == "name"
    assert "'finance_chief'" in str(error) and "'cfo'" in str(error)


def test_duplicate_name_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "cfo.md", "---\nname: cfo\nrole: CFO\n---\nYou count.\n")
    second = write(tmp_path, "cfo.yaml", yaml_agent("cfo"))
    error = load_error(tmp_path)
    assert str(first) in str(error) and str(second) in str(error)
    assert "duplicate" in str(error)


def test_unknown_tool_names_file_and_tool(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo", tools="[financial_model, crystal_ball]"))
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}: tools[1]: unknown tool 'crystal_ball'")
    assert "financial_model" in str(error)  # lists the registered tools


def test_unknown_collaborator(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo", collaborators="[ceo]"))
    assert str(load_error(tmp_path)).startswith(f"{path}: collaborators[0]: unknown agent 'ceo'")


def test_markdown_body_and_front_matter_system_message(tmp_path: Path) -> None:
    path = write(
        tmp_path, "cfo.md", "---\nname: cfo\nrole: CFO\nsystem_message: From front matter.\n---\nFrom the body.\n"
    )
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}: system_message: set in the front matter and also")


def test_markdown_without_body_or_system_message(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.md", "---\nname: cfo\nrole: CFO\n---\n\n")
    assert str(load_error(tmp_path)).startswith(f"{path}: system_message: missing")


def test_markdown_without_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.md", "You are the CFO.\n")
    assert str(load_error(tmp_path)).startswith(f"{path}:1: a Markdown definition must start")


def test_markdown_unclosed_front_matter(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.md", "---\nname: cfo\nrole: CFO\n")
    assert "never closed" in str(load_error(tmp_path)) and str(path) in str(load_error(tmp_path))


def test_invalid_yaml_reports_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", "name: cfo\nrole: CFO\nexpertise: [finance\nsystem_message: x\n")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}:4: invalid YAML")
    assert error.line == 4


def test_invalid_yaml_in_front_matter_uses_file_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.md", "---\nname: cfo\nrole: : CFO\n---\nbody\n")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}:3: invalid YAML"), str(error)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", yaml_agent("cfo") + "role: Other\n")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}:4: invalid YAML") and "duplicate key 'role'" in str(error)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "cfo.yaml", "- name: cfo\n")
    assert str(load_error(tmp_path)).startswith(f"{path}: the file must be a YAML mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "cfo.yaml"
    path.write_bytes(b"name: cfo\nrole: \xff\xfe\n")
    error = load_error(tmp_path)
    assert str(error).startswith(f"{path}: cannot read the file")


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(AgentCatalogError, match="not a directory"):
        AgentCatalog.from_directories(missing)
    assert len(AgentCatalog.from_directories(missing, missing_ok=True)) == 0


def test_load_single_file(tmp_path: Path) -> None:
    path = write(tmp_path, "solo.yaml", yaml_agent("solo", performance="0.75"))
    assert load_definition_file(path).performance == 0.75


# --- overrides ---------------------------------------------------------------------------------


def test_override_directory_replaces_an_agent(tmp_path: Path) -> None:
    write(
        tmp_path,
        "cfo.md",
        """
        ---
        name: cfo
        role: Fractional CFO
        expertise: [finance]
        complexity: 2
        collaborators: [strategic]
        tools: [financial_model]
        ---
        You are a part-time CFO for a small company.
        """,
    )
    write(tmp_path, "legal.yaml", yaml_agent("legal", collaborators="[cfo, risk_officer]"))
    catalog = AgentCatalog.from_directories(shipped_definitions_dir(), tmp_path)
    assert catalog.get("cfo").role == "Fractional CFO"
    assert catalog.get("cfo").system_message == "You are a part-time CFO for a small company."
    assert catalog.source("cfo") == str(tmp_path / "cfo.md")
    assert set(catalog.names()) == set(default_catalog().names()) | {"legal"}
    # the shipped catalog is untouched
    assert default_catalog().get("cfo").role == "Chief Financial Officer"
    # order matters: the shipped directory last wins back
    assert AgentCatalog.from_directories(tmp_path, shipped_definitions_dir()).get("cfo").role == (
        "Chief Financial Officer"
    )
