"""deploy/: the compose file, its load balancer, its image and its settings agree with each other.

Docker is not available where these tests run (no daemon, no compose plugin), so the file is read as
YAML and every cross-reference is checked: services that depend on each other exist, each setting points
at the service that provides it, both replicas share what must be shared, the balancer reaches every
replica on the port the image serves and pins sessions. `docker compose config` runs too when present.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mediamux.config import Settings
from mediamux.files.s3 import parse_s3_url
from mediamux.server.drain import GRACE_S

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
REPLICAS = ("mediamux-1", "mediamux-2")
# What every replica must be given for a team deployment (the list).
SHARED = (
    "MEDIAMUX_DATABASE_URL",
    "MEDIAMUX_OUTPUT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "MEDIAMUX_STATE_KEYS",
    "MEDIAMUX_HTTP_TOKEN",
    "MEDIAMUX_HTTP_ALLOWED_HOSTS",
    "MEDIAMUX_DRAIN_S",
)
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from the example settings."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        found = env.get(name, "")
        if op in (":?", "?") and not found:
            raise AssertionError(f"{name} is required by compose.yaml but empty in .env.example")
        return found or (arg if op in (":-", "-") else "")

    return _VARIABLE.sub(one, value).replace("$$", "$")


def replica_env(name: str) -> dict[str, str]:
    environment = compose()["services"][name]["environment"]
    return {key: interpolate(str(value), env_example()) for key, value in environment.items()}


def nginx() -> str:
    return (DEPLOY / "nginx.conf").read_text()


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def served_port() -> int:
    match = re.search(r'"--port", "(\d+)"', dockerfile())
    assert match, "the image's ENTRYPOINT names no --port"
    return int(match.group(1))


def test_every_service_a_service_depends_on_exists_and_can_say_it_is_ready() -> None:
    services = compose()["services"]
    assert set(services) == {"lb", *REPLICAS, "postgres", "minio", "minio-init"}
    for name, service in services.items():
        for needed, how in (service.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on {needed}, which is not a service"
            assert how["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            )
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], f"{needed} has no healthcheck for {name} to wait on"
    declared = set(compose()["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
            else:
                assert source in declared, f"{name} uses volume {source}, which is not declared"


def test_both_replicas_are_the_same_image_with_the_same_shared_settings() -> None:
    services = compose()["services"]
    first, second = (services[name] for name in REPLICAS)
    assert first["build"] == second["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY.parent / first["build"]["dockerfile"]).is_file()
    assert first["environment"] == second["environment"]
    assert set(SHARED) <= set(first["environment"])
    # Each replica keeps its own staging folder.
    assert first["volumes"] != second["volumes"]


def test_each_setting_points_at_the_service_that_provides_it() -> None:
    services = compose()["services"]
    env = replica_env(REPLICAS[0])
    example = env_example()

    database = urlsplit(env["MEDIAMUX_DATABASE_URL"])
    postgres = services["postgres"]["environment"]
    assert database.scheme == "postgresql" and database.hostname == "postgres" and database.port == 5432
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path.lstrip("/") == postgres["POSTGRES_DB"]
    assert database.password == interpolate(postgres["POSTGRES_PASSWORD"], example)

    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    assert (endpoint.hostname, endpoint.port) == ("minio", 9000)  # MinIO's API port
    init = services["minio-init"]
    assert "http://minio:9000" in " ".join(init["entrypoint"])
    assert parse_s3_url(env["MEDIAMUX_OUTPUT_URL"]).bucket == init["environment"]["BUCKET"]
    # The user minio-init creates is the one the replicas sign in as.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert interpolate(init["environment"][key], example) == env[key]
    assert env["AWS_ACCESS_KEY_ID"] != interpolate(
        services["minio"]["environment"]["MINIO_ROOT_USER"], example
    )


def test_the_example_settings_are_accepted_by_mediamux() -> None:
    settings = Settings(**replica_env(REPLICAS[0]))

    assert settings.output_url == "s3://mediamux-outputs/outputs"
    assert len(settings.state_keys) == 1 and settings.http_token is not None
    assert "localhost:8765" in settings.http_allowed_hosts  # the port the balancer publishes
    # Docker's SIGKILL must come after the drain and the grace for open responses.
    grace = compose()["services"][REPLICAS[0]]["stop_grace_period"]
    assert int(grace.removesuffix("s")) > settings.drain_s + GRACE_S


def test_every_variable_compose_reads_is_in_the_env_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = {match.group(1) for match in _VARIABLE.finditer(text)}
    assert used <= set(env_example()), sorted(used - set(env_example()))


def test_the_balancer_pins_sessions_and_reaches_every_replica_on_the_served_port() -> None:
    config = nginx()
    upstream = re.search(r"upstream mediamux \{(.*?)\}", config, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", upstream.group(1), re.M)
    assert {(host, int(port)) for host, port in servers} == {(name, served_port()) for name in REPLICAS}
    assert "hash $http_mcp_session_id;" in upstream.group(1)
    assert "proxy_buffering off;" in config  # SSE progress streams through
    assert re.search(r"proxy_next_upstream [^;]*http_503[^;]*non_idempotent;", config)
    listen = re.search(r"listen (\d+);", config)
    assert listen is not None
    assert compose()["services"]["lb"]["ports"] == [f"8765:{listen.group(1)}"]


def test_the_image_installs_both_backends_serves_healthz_and_drains_on_sigterm() -> None:
    image = dockerfile()
    assert 'pip install ".[postgres,s3]"' in image
    assert f"EXPOSE {served_port()}" in image
    assert "STOPSIGNAL SIGTERM" in image
    assert f"http://127.0.0.1:{served_port()}/healthz" in image
    assert re.search(r"^USER (?!root)\w+", image, re.M)
    assert '"--host", "0.0.0.0"' in image


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="Docker Compose is not installed here; the structural tests above stand in for it",
)
def test_docker_compose_accepts_the_file() -> None:
    files = ["-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / ".env.example")]
    done = subprocess.run(
        ["docker", "compose", *files, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
