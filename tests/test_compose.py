"""Static checks of the production-like deployment (no Docker needed).

Parses docker-compose.yml, the Dockerfile and the files under deploy/ and checks them against
the code: settings names, search attributes, service names, ports and mounted files.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from convergio.settings import SEARCH_ATTRIBUTES, Settings
from convergio.stack.temporal_server import DEV_SERVER_DYNAMIC_CONFIG

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
OTEL_CONFIG = ROOT / "deploy" / "otel-collector.yaml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init.sql"
TEMPORAL_DYNAMIC_CONFIG = ROOT / "deploy" / "temporal" / "dynamicconfig.yaml"

REQUIRED_SERVICES = {
    "postgresql",
    "temporal",
    "temporal-admin-tools",
    "temporal-ui",
    "redis",
    "otel-collector",
    "jaeger",
    "prometheus",
    "grafana",
    "convergio-api",
    "convergio-worker",
    "convergio-migrate",
}
APP_SERVICES = ("convergio-api", "convergio-worker", "convergio-migrate")
# Without these three the app would start its embedded Temporal/PostgreSQL/Redis.
EXTERNAL_SERVER_VARS = ("CONVERGIO_TEMPORAL_ADDRESS", "CONVERGIO_DATABASE_URL", "CONVERGIO_REDIS_URL")
SETTINGS_ENV_VARS = {f"CONVERGIO_{name.upper()}" for name in Settings.model_fields}

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


# --------------------------------------------------------------------------- helpers


def interpolate(value: str) -> str:
    """Compose variable interpolation with every variable unset: defaults apply, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(4):  # bare $VAR
            return ""
        operator, argument = match.group(2), match.group(3)
        if operator in (":-", "-"):
            return interpolate(argument or "")
        if operator in (":?", "?"):
            raise AssertionError(f"{match.group(0)} requires the variable to be set")
        return ""  # ${VAR}, ${VAR:+x}, ${VAR+x} with VAR unset

    return _INTERPOLATION.sub(replace, value)


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in docker-compose.yml"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or list form), interpolated with defaults."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        raw = dict(pairs)
    return {str(key): interpolate("" if value is None else str(value)) for key, value in raw.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return interpolate(" ".join(command) if isinstance(command, list) else str(command))


def command_args(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return [interpolate(part) for part in command] if isinstance(command, list) else shlex.split(interpolate(command))


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service declares it listens on: container side of ``ports`` plus ``expose``."""
    found: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found.add(int(entry["target"]))
        else:
            found.add(int(interpolate(str(entry)).split("/")[0].rsplit(":", 1)[-1]))
    for entry in service.get("expose") or []:
        found.add(int(str(entry).split("/")[0]))
    return found


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """host port -> container port for the service's ``ports``."""
    found: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published"):
                found[int(entry["published"])] = int(entry["target"])
            continue
        parts = interpolate(str(entry)).split("/")[0].split(":")
        if len(parts) >= 2:
            found[int(parts[-2])] = int(parts[-1])
    return found


def host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or a URL -> (host, port)."""
    split = urlsplit(address if "://" in address else f"//{address}")
    port = split.port or default_port
    assert split.hostname and port, f"cannot tell host and port from {address!r}"
    return split.hostname, port


def assert_service_port(services: dict[str, Any], address: str, where: str, default_port: int | None = None) -> None:
    host, port = host_port(address, default_port)
    assert host in services, f"{where}: {address!r} points at {host!r}, which is not a compose service"
    declared = container_ports(services[host])
    assert port in declared, (
        f"{where}: {address!r} uses port {port}, but service {host!r} declares only {sorted(declared)} "
        "(ports/expose)"
    )


def dockerfile_instructions() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def dockerfile_cmd() -> list[str]:
    cmds = [rest for keyword, rest in dockerfile_instructions() if keyword == "CMD"]
    assert cmds, "Dockerfile has no CMD"
    cmd = json.loads(cmds[-1])  # exec form, so signals reach the process
    assert isinstance(cmd, list) and cmd, f"CMD must be a non-empty exec-form list, got {cmds[-1]!r}"
    return cmd


# --------------------------------------------------------------------------- compose structure


def test_required_services_exist(services: dict[str, Any]) -> None:
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"


def test_depends_on_targets_exist(services: dict[str, Any]) -> None:
    valid_conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            assert condition in valid_conditions, f"{name} -> {target}: unknown condition {condition!r}"
            if condition == "service_healthy":
                target_service = services[target]
                assert "healthcheck" in target_service and not target_service["healthcheck"].get("disable"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )


def test_app_services_wait_for_migrations_and_backends(services: dict[str, Any]) -> None:
    for name in ("convergio-api", "convergio-worker"):
        deps = depends_on(services[name])
        assert deps.get("convergio-migrate") == "service_completed_successfully", name
        assert deps.get("postgresql") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        assert "temporal" in deps, name
    assert depends_on(services["convergio-migrate"]).get("postgresql") == "service_healthy"
    assert services["convergio-migrate"].get("restart", "no") == "no", "the migration job must run once"


def test_bind_mounted_files_exist(services: dict[str, Any]) -> None:
    checked = 0
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
                checked += 1
    assert checked >= 4, "expected bind mounts for init.sql, collector, prometheus and grafana configs"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.get("source", "") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if ":" in str(volume) and source and not source.startswith(("./", "../", "/", "~")):
                assert source in declared, f"{name} uses volume {source!r}, not declared under volumes:"


def test_postgres_init_script_creates_app_database(services: dict[str, Any]) -> None:
    postgres = services["postgresql"]
    assert str(postgres["image"]).startswith("pgvector/pgvector:"), "the app needs the pgvector extension"
    mounts = [str(v) for v in postgres.get("volumes") or []]
    init_mounts = [m for m in mounts if ":/docker-entrypoint-initdb.d/" in m]
    assert init_mounts and init_mounts[0].startswith("./deploy/postgres/init.sql:"), mounts
    sql = POSTGRES_INIT.read_text(encoding="utf-8")
    assert re.search(r"CREATE DATABASE\s+convergio\s*;", sql, re.I)
    assert re.search(r"\\c\s+convergio", sql)
    assert re.search(r"CREATE EXTENSION IF NOT EXISTS\s+vector", sql, re.I)
    # The image would already create POSTGRES_DB, and CREATE DATABASE would then abort the init.
    assert environment(postgres).get("POSTGRES_DB", environment(postgres).get("POSTGRES_USER")) != "convergio"


# --------------------------------------------------------------------------- app settings


def test_every_convergio_variable_is_a_setting(services: dict[str, Any]) -> None:
    used: set[str] = set()
    for name, service in services.items():
        for key in environment(service):
            if key.startswith("CONVERGIO_"):
                assert key in SETTINGS_ENV_VARS, (
                    f"{name} sets {key}, which is no field of convergio.settings.Settings "
                    f"(known: {sorted(SETTINGS_ENV_VARS)})"
                )
                used.add(key)
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for key in re.findall(r"\b(CONVERGIO_[A-Z0-9_]+)=", rest):
                assert key in SETTINGS_ENV_VARS, f"Dockerfile sets {key}, which is no Settings field"
    assert used, "no CONVERGIO_* variables found at all"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_external_servers(services: dict[str, Any], name: str) -> None:
    env = environment(services[name])
    for key in EXTERNAL_SERVER_VARS:
        assert env.get(key), f"{name} must set {key}, or the app starts its embedded server"

    assert_service_port(services, env["CONVERGIO_TEMPORAL_ADDRESS"], f"{name} CONVERGIO_TEMPORAL_ADDRESS")
    assert host_port(env["CONVERGIO_TEMPORAL_ADDRESS"])[0] == "temporal"

    db = urlsplit(env["CONVERGIO_DATABASE_URL"])
    assert db.scheme in {"postgresql", "postgres", "postgresql+psycopg"}, env["CONVERGIO_DATABASE_URL"]
    assert_service_port(services, env["CONVERGIO_DATABASE_URL"], f"{name} CONVERGIO_DATABASE_URL", 5432)
    assert db.hostname == "postgresql"
    assert db.path == "/convergio", "the app database is the one init.sql creates"
    pg_env = environment(services["postgresql"])
    assert db.username == pg_env["POSTGRES_USER"] and db.password == pg_env["POSTGRES_PASSWORD"], (
        f"{name}: database credentials differ from the postgresql service's"
    )

    redis_url = urlsplit(env["CONVERGIO_REDIS_URL"])
    assert redis_url.scheme in {"redis", "rediss"}
    assert_service_port(services, env["CONVERGIO_REDIS_URL"], f"{name} CONVERGIO_REDIS_URL", 6379)
    assert redis_url.hostname == "redis"

    assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT"), f"{name} must export telemetry"
    assert_service_port(services, env["OTEL_EXPORTER_OTLP_ENDPOINT"], f"{name} OTEL_EXPORTER_OTLP_ENDPOINT")


def test_temporal_port_and_namespace_agree(services: dict[str, Any]) -> None:
    temporal = services["temporal"]
    assert str(temporal["image"]).startswith("temporalio/auto-setup:")
    temporal_env = environment(temporal)
    assert temporal_env["DB"] == "postgres12"
    assert temporal_env["POSTGRES_SEEDS"] in services
    assert temporal_env["POSTGRES_PWD"] == environment(services["postgresql"])["POSTGRES_PASSWORD"]
    assert temporal_env["POSTGRES_USER"] == environment(services["postgresql"])["POSTGRES_USER"]
    assert depends_on(temporal).get("postgresql") == "service_healthy"

    namespace = temporal_env.get("DEFAULT_NAMESPACE", "default")
    for name in APP_SERVICES:
        env = environment(services[name])
        _, port = host_port(env["CONVERGIO_TEMPORAL_ADDRESS"])
        assert port in container_ports(temporal), f"{name}: Temporal port {port} is not the temporal service's"
        app_namespace = env.get("CONVERGIO_TEMPORAL_NAMESPACE", Settings.model_fields["temporal_namespace"].default)
        assert app_namespace == namespace, f"{name} uses namespace {app_namespace!r}, auto-setup creates {namespace!r}"

    ui = services["temporal-ui"]
    assert_service_port(services, environment(ui)["TEMPORAL_ADDRESS"], "temporal-ui TEMPORAL_ADDRESS")
    ui_url = environment(services["convergio-api"]).get("CONVERGIO_TEMPORAL_UI_URL")
    assert ui_url, "links to workflows need CONVERGIO_TEMPORAL_UI_URL"
    assert host_port(ui_url)[1] in published_ports(ui), f"{ui_url} is not a port temporal-ui publishes"


def test_temporal_dynamic_config_matches_the_embedded_server(services: dict[str, Any]) -> None:
    """Both servers lift the 20/s task-queue read cap the same way (see DEV_SERVER_DYNAMIC_CONFIG)."""
    mounted = {
        target: source
        for volume in services["temporal"].get("volumes") or []
        for source, target, *_ in [str(volume).split(":")]
    }
    path = environment(services["temporal"]).get("DYNAMIC_CONFIG_FILE_PATH")
    assert path in mounted, "DYNAMIC_CONFIG_FILE_PATH must point at a mounted file"
    assert (ROOT / mounted[path]).resolve() == TEMPORAL_DYNAMIC_CONFIG.resolve()
    values = {key: entries[0]["value"] for key, entries in load_yaml(TEMPORAL_DYNAMIC_CONFIG).items()}
    assert values == DEV_SERVER_DYNAMIC_CONFIG


def test_admin_tools_register_exactly_the_search_attributes(services: dict[str, Any]) -> None:
    admin = services["temporal-admin-tools"]
    assert str(admin["image"]).startswith("temporalio/admin-tools:")
    script = command_text(admin)
    creates = [line for line in script.splitlines() if "search-attribute create" in line]
    assert creates, "temporal-admin-tools registers no search attributes"

    registered: dict[str, str] = {}
    app_env = environment(services["convergio-worker"])
    app_namespace = app_env.get("CONVERGIO_TEMPORAL_NAMESPACE", "default")
    for line in creates:
        args = shlex.split(line)
        pairs = re.findall(r"--name\s+(\S+)\s+--type\s+(\S+)", line)
        assert pairs, f"cannot read --name/--type from {line!r}"
        for attr, kind in pairs:
            assert attr not in registered, f"{attr} registered twice"
            registered[attr] = kind
        assert args[args.index("--namespace") + 1] == app_namespace, line
        assert args[args.index("--address") + 1] == app_env["CONVERGIO_TEMPORAL_ADDRESS"], line
    assert registered == SEARCH_ATTRIBUTES

    assert "already exists" in script, "re-running the stack must tolerate attributes that already exist"
    for name in ("convergio-api", "convergio-worker"):
        assert depends_on(services[name]).get("temporal-admin-tools") == "service_completed_successfully", name


# --------------------------------------------------------------------------- image and CLI


def test_dockerfile_builds_a_non_root_api_image() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest
    )
    bases = {re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), f.split()[0]) for f in froms}
    assert bases == {"python:3.11-slim"}, f"base images: {bases}"

    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs), "the image must `pip install .`"
    assert not re.search(r"pip install [^&;]*\.\[", runs), "no extras (dev tooling) in the image"

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert ("EXPOSE", "8000") in instructions

    healthchecks = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert healthchecks and "urllib" in healthchecks[-1] and "/healthz" in healthchecks[-1]
    assert "127.0.0.1" in healthchecks[-1]

    assert dockerfile_cmd() == ["convergio", "api"]


def test_app_services_use_the_dockerfile(services: dict[str, Any]) -> None:
    images = set()
    for name in APP_SERVICES:
        service = services[name]
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        assert context == ".", f"{name} must build from ./Dockerfile"
        images.add(service.get("image"))
        assert command_args(service)[0] == dockerfile_cmd()[0], f"{name} does not run the convergio CLI"
    assert len(images) == 1, f"api, worker and migrate must share one image, got {images}"

    assert command_args(services["convergio-api"]) == ["convergio", "api"]
    assert command_args(services["convergio-worker"]) == ["convergio", "worker"]
    assert command_args(services["convergio-migrate"]) == ["convergio", "db", "upgrade"]
    assert services["convergio-worker"].get("deploy", {}).get("replicas") == 2
    for name in ("convergio-worker", "convergio-migrate"):
        assert services[name].get("healthcheck", {}).get("disable") is True, (
            f"{name} serves no HTTP; the image's /healthz check would mark it unhealthy"
        )

    api = services["convergio-api"]
    api_port = int(environment(api)["CONVERGIO_API_PORT"])
    assert environment(api)["CONVERGIO_API_HOST"] == "0.0.0.0", "the API must listen beyond the container"
    assert api_port in container_ports(api) and api_port == 8000


def test_cmd_is_a_console_script_of_the_package() -> None:
    assert PYPROJECT.is_file(), "pyproject.toml is missing: the image cannot `pip install .`"
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    scripts = pyproject.get("project", {}).get("scripts", {})
    command = dockerfile_cmd()[0]
    assert command in scripts, f"Dockerfile CMD runs {command!r}, not a [project.scripts] entry ({sorted(scripts)})"
    assert scripts[command] == "convergio.cli:main"


def test_compose_commands_exist_in_the_cli(services: dict[str, Any]) -> None:
    if not (ROOT / "convergio" / "cli.py").is_file():
        pytest.skip("convergio/cli.py is not written yet")
    import typer.main

    from convergio.cli import app

    root = typer.main.get_command(app)
    for name in APP_SERVICES:
        args = command_args(services[name])
        command: Any = root
        for word in args[1:]:
            subcommands = getattr(command, "commands", None) or {}
            assert word in subcommands, f"{name} runs {' '.join(args)!r}, but the CLI has no such command"
            command = subcommands[word]
        assert not getattr(command, "commands", None), f"{name}: {' '.join(args)!r} is a group, not a command"


# --------------------------------------------------------------------------- observability


def test_otel_collector_pipelines_are_wired() -> None:
    config = load_yaml(OTEL_CONFIG)
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines), f"pipelines: {sorted(pipelines)}"
    for pipeline_name, pipeline in pipelines.items():
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_name
        for section in ("receivers", "processors", "exporters"):
            defined = set(config.get(section) or {})
            for component in pipeline.get(section) or []:
                assert component in defined, f"pipeline {pipeline_name} uses undefined {section[:-1]} {component!r}"
    for extension in config["service"].get("extensions") or []:
        assert extension in (config.get("extensions") or {}), f"undefined extension {extension!r}"

    exporters = config["exporters"]
    trace_exporters = {e.split("/")[0] for e in pipelines["traces"]["exporters"]}
    assert trace_exporters & {"otlp", "otlphttp"}, "traces must go to Jaeger over OTLP"
    assert "prometheus" in pipelines["metrics"]["exporters"]
    assert host_port(exporters["prometheus"]["endpoint"])[1] == 8889


def test_otel_collector_endpoints_match_compose(services: dict[str, Any]) -> None:
    config = load_yaml(OTEL_CONFIG)
    collector = services["otel-collector"]
    mounts = [str(v) for v in collector.get("volumes") or []]
    assert any(m.startswith("./deploy/otel-collector.yaml:") for m in mounts), mounts

    for name, exporter in config["exporters"].items():
        endpoint = (exporter or {}).get("endpoint")
        if not endpoint:
            continue
        host, _ = host_port(endpoint)
        if host == "0.0.0.0":  # a listener on the collector itself
            assert_service_port(services, endpoint.replace("0.0.0.0", "otel-collector"), f"exporter {name}")
        else:
            assert_service_port(services, endpoint, f"collector exporter {name}")
    for protocol in config["receivers"]["otlp"]["protocols"].values():
        endpoint = protocol["endpoint"]
        assert host_port(endpoint)[0] == "0.0.0.0", f"{endpoint} is unreachable from other containers"
        assert host_port(endpoint)[1] in container_ports(collector)

    jaeger_env = environment(services["jaeger"])
    assert jaeger_env.get("COLLECTOR_OTLP_ENABLED") == "true"
    assert 16686 in published_ports(services["jaeger"])


def test_prometheus_scrapes_existing_services(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    mounts = [str(v) for v in prometheus.get("volumes") or []]
    assert any(m.startswith("./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml") for m in mounts)

    config = load_yaml(PROMETHEUS_CONFIG)
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    assert targets, "prometheus.yml scrapes nothing"
    for target in targets:
        assert_service_port(services, target, "prometheus.yml target")
    assert "otel-collector:8889" in targets
    assert "convergio-api:8000" in targets


def test_grafana_datasources_point_at_services(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounts = [str(v) for v in grafana.get("volumes") or []]
    assert any(m.startswith("./deploy/grafana/provisioning:/etc/grafana/provisioning") for m in mounts), mounts

    datasources = []
    for path in sorted(GRAFANA_DATASOURCES.glob("*.y*ml")):
        datasources += load_yaml(path).get("datasources") or []
    by_type = {ds["type"]: ds for ds in datasources}
    assert {"prometheus", "jaeger"} <= set(by_type), f"datasources: {sorted(by_type)}"
    for ds in datasources:
        assert_service_port(services, ds["url"], f"grafana datasource {ds['name']}")
    assert host_port(by_type["prometheus"]["url"])[0] == "prometheus"
    assert host_port(by_type["jaeger"]["url"])[0] == "jaeger"
    assert sum(1 for ds in datasources if ds.get("isDefault")) == 1


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x}/${B-y}/${C}/$$D/$E") == "x/y//$D/"
    assert interpolate("${A:-${B:-nested}}") == "nested"
