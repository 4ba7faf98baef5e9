"""docker-compose.yml: parsed as YAML and interpolated as compose does, checked against the CLI
and against the security defaults (no literal password, nothing published beyond 127.0.0.1).
Where a Docker engine is installed, ``docker compose config`` checks the same file."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import yaml
from sqlalchemy.engine import make_url

from gapsweep.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
#: The forms of compose variable interpolation this file may use: ${VAR}, ${VAR:-default}, ${VAR:?error}.
#: What compose needs set: the database's password and the object store's secret key.
PASSWORDS = {"POSTGRES_PASSWORD": "pw", "MINIO_ROOT_PASSWORD": "s3-secret"}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """What ``docker compose`` reports for ``${VAR:?error}`` with VAR unset or empty."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with compose's variable interpolation applied, as ``docker compose config`` does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""

    assert "$" not in _VARIABLE.sub("", value).replace("$$", ""), f"unsupported interpolation in {value!r}"
    return "$".join(_VARIABLE.sub(substitute, part) for part in value.split("$$"))  # $$: a literal $


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def _compose(env: Mapping[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def _published(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Every service's published ports, as host_ip:host_port:container_port."""
    return {name: service["ports"] for name, service in compose["services"].items() if "ports" in service}


def test_compose_services_are_complete_and_run_real_commands():
    compose = _compose(PASSWORDS)
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"] and any("pgdata" in v for v in postgres["volumes"])
    assert "pgdata" in compose["volumes"]
    assert "worker" in services and "worker-gpu" in services and "dashboard" in services
    gpu = services["worker-gpu"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu,s3"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["dashboard"]["command"][0].startswith("postgresql")

    parser = build_parser()
    built = [name for name, service in services.items() if "build" in service]
    assert set(built) == {"launch", "proxy", "worker", "worker-gpu"}
    proxy = parser.parse_args(services["proxy"]["command"])
    for name in built:
        command = services[name]["command"]
        args = parser.parse_args(command)  # every command and flag exists in the CLI
        assert args.command == command[0]
        storage = services[name]["environment"]["GAPSWEEP_STORAGE"]
        if name.startswith("worker"):  # workers reach the database through the proxy alone
            assert storage == f"grpc://proxy:{proxy.port}" and proxy.host == "0.0.0.0"
            assert services[name]["depends_on"]["proxy"]["condition"] == "service_started"
        else:
            assert storage.startswith("postgresql://")
            assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Models and checkpoints go to the MinIO service: boto3 (the s3 extra) reaches it by its AWS_* settings.
        assert "s3" in services[name]["build"]["args"]["EXTRAS"].split(",")
        assert services[name]["environment"]["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
        assert services[name]["environment"]["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    worker = parser.parse_args(services["worker"]["command"])
    assert worker.gpu == "none" and worker.study == "digits-demo"
    launch = parser.parse_args(services["launch"]["command"])
    assert (ROOT / launch.sweep_file).is_file() and launch.create_only
    bucket = launch.artifacts.removeprefix("s3://").split("/")[0]
    assert f"mc mb --ignore-existing store/{bucket}" in services["buckets"]["entrypoint"][-1]  # the bucket exists first
    assert services["launch"]["depends_on"]["buckets"]["condition"] == "service_completed_successfully"
    assert '"$MC_PASSWORD"' in services["buckets"]["entrypoint"][-1]  # read in the container, not written here


def test_the_worker_image_installs_the_cli():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["gapsweep"]' in dockerfile
    for package in ("gapsweep", "sweeps", "search_spaces", "storage", "scripts"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'scripts/setup.sh "$EXTRAS"' in dockerfile  # the same install, CPU or GPU, as on a laptop


def test_the_compose_file_writes_no_password_and_refuses_to_start_without_one():
    raw = yaml.safe_load(COMPOSE.read_text())
    for text in _strings(raw):
        for url in (word for word in text.split() if "://" in word):  # a URL alone, or inside a shell line
            assert make_url(url).password is None, f"a password in the URL {url}"
    with pytest.raises(MissingVariable) as missing:
        _compose({})
    message = str(missing.value)
    assert "POSTGRES_PASSWORD" in message and "\n" not in message and "docs/security.md" in message
    with pytest.raises(MissingVariable, match="MINIO_ROOT_PASSWORD.*docs/security.md"):
        _compose({"POSTGRES_PASSWORD": "pw"})
    compose = _compose({"POSTGRES_PASSWORD": "from-the-environment", "MINIO_ROOT_PASSWORD": "s3-from-the-environment"})
    services = compose["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "from-the-environment"
    clients = [name for name, service in services.items() if name != "postgres" and "postgres" in service.get("depends_on", {})]
    assert set(clients) == {"launch", "proxy", "dashboard"}
    for name in clients:  # libpq reads PGPASSWORD: no password in a URL or on a command line
        assert services[name]["environment"]["PGPASSWORD"] == "from-the-environment"
    for name in ("worker", "worker-gpu"):  # behind the proxy, a worker holds no database password
        assert "PGPASSWORD" not in services[name]["environment"]
    assert "from-the-environment" not in " ".join(_strings({n: [s.get("command"), s.get("entrypoint")] for n, s in services.items()}))
    assert ".env" in (ROOT / ".gitignore").read_text().split()  # where the password may be kept


def test_ports_are_published_on_127_0_0_1_unless_the_user_opts_in():
    published = _published(_compose(PASSWORDS))
    assert set(published) == {"postgres", "dashboard", "minio"}
    for name, ports in published.items():
        for port in ports:
            host_ip = port.rsplit(":", 2)[0] if port.count(":") >= 2 else "every interface"
            assert host_ip == "127.0.0.1" or (host_ip != "every interface" and ipaddress.ip_address(host_ip).is_loopback), (
                f"{name} publishes {port} beyond 127.0.0.1"
            )
    opted_in = _published(_compose({**PASSWORDS, "GAPSWEEP_DB_BIND": "10.0.0.5"}))
    assert opted_in["postgres"] == ["10.0.0.5:5432:5432"] and opted_in["dashboard"] == ["127.0.0.1:8080:8080"]


def _has_docker_compose() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    ).returncode == 0


@pytest.mark.skipif(not _has_docker_compose(), reason="no docker compose here")
def test_docker_compose_config_agrees():
    env = {key: value for key, value in os.environ.items() if key not in (*PASSWORDS, "GAPSWEEP_DB_BIND", "GAPSWEEP_DASHBOARD_BIND", "GAPSWEEP_S3_BIND")}
    refused = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config"], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
    config = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        env={**env, **PASSWORDS}, capture_output=True, text=True, check=True,
    )
    services = yaml.safe_load(config.stdout)["services"]
    for name in ("postgres", "dashboard", "minio"):
        assert all(port["host_ip"] == "127.0.0.1" for port in services[name]["ports"])
