"""docker-compose.yml: no Docker engine runs here, so check the file against the CLI instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from gapsweep.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_compose_services_are_complete_and_run_real_commands():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["healthcheck"]["test"] and any("pgdata" in v for v in postgres["volumes"])
    assert "pgdata" in compose["volumes"]
    assert "worker" in services and "worker-gpu" in services and "dashboard" in services
    gpu = services["worker-gpu"]
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["dashboard"]["command"][0].startswith("postgresql")

    parser = build_parser()
    built = [name for name, service in services.items() if "build" in service]
    assert set(built) == {"launch", "worker", "worker-gpu"}
    for name in built:
        command = services[name]["command"]
        args = parser.parse_args(command)  # every command and flag exists in the CLI
        assert args.command == command[0]
        assert services[name]["environment"]["GAPSWEEP_STORAGE"].startswith("postgresql://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = parser.parse_args(services["worker"]["command"])
    assert worker.gpu == "none" and worker.study == "digits-demo"
    launch = parser.parse_args(services["launch"]["command"])
    assert (ROOT / launch.sweep_file).is_file() and launch.create_only


def test_the_worker_image_installs_the_cli():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["gapsweep"]' in dockerfile
    for package in ("gapsweep", "sweeps", "search_spaces", "storage", "scripts"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'scripts/setup.sh "$EXTRAS"' in dockerfile  # the same install, CPU or GPU, as on a laptop
