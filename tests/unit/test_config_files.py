"""compose.yaml and .env.example agree with the Settings model.

There is no Docker engine on the development machines, so compose.yaml is
checked by reading it: pinned images, healthchecks, start-up order, and every
name, port, topic and bucket it shares with feature_store/settings.py. The list
of settings is always taken from `Settings.model_fields`, never written here.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from feature_store.settings import PROJECT_ROOT, Settings

COMPOSE_FILE: Path = PROJECT_ROOT / "compose.yaml"
ENV_EXAMPLE_FILE: Path = PROJECT_ROOT / ".env.example"

#: Long-running services everything else waits for; each needs a healthcheck.
INFRASTRUCTURE = ("kafka", "redis", "minio")
#: One-shot jobs that must have finished (exit 0) before their dependants start.
INIT_JOBS = ("kafka-init", "minio-init")
#: The ports MinIO listens on inside its container (S3 API; the console is read from its command).
MINIO_S3_PORT = 9000
REDIS_PORT = 6379

#: Environment variable names the project understands: the Settings fields, upper-cased.
SETTINGS_ENV_NAMES = frozenset(name.upper() for name in Settings.model_fields)

#: An exact version (3.9.1, 7.4.2, 3.11.13-slim-bookworm) or a MinIO release stamp.
PINNED_TAG = re.compile(r"\d+\.\d+\.\d+(?:[-.][\w.-]+)?|RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ")


# --- fixtures and helpers ---------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's exported KAFKA_BOOTSTRAP (any case) must not change what "default" means here."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_ENV_NAMES:
            monkeypatch.delenv(name)


@pytest.fixture
def defaults() -> Settings:
    return Settings(_env_file=None)


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose["services"]


@pytest.fixture(scope="module")
def app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the project's own image (they carry a `build`)."""
    apps = {name: svc for name, svc in services.items() if "build" in svc}
    assert apps, "compose.yaml has no service built from the project's Dockerfile"
    return apps


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def _interpolate(value: str) -> str:
    """Resolve compose's `${NAME:-default}` to its default (and `$$` to `$`), as on a bare machine."""

    def default_of(match: re.Match[str]) -> str:
        if match.group("default") is None:
            raise AssertionError(f"{match.group(0)} has no default: compose would need it set on the host")
        return match.group("default")

    resolved = re.sub(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}", default_of, value)
    return resolved.replace("$$", "$")


def _app_settings(service: dict[str, Any]) -> Settings:
    """The Settings a container of this service sees."""
    env = {name.lower(): _interpolate(value) for name, value in _environment(service).items()}
    return Settings(_env_file=None, **env)


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port, from the short ("[ip:]host:container") or long port syntax."""
    mapping: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if "published" in entry:
                mapping[int(entry["published"])] = int(entry["target"])
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        if len(parts) >= 2:
            mapping[int(parts[-2])] = int(parts[-1])
    return mapping


def _script(service: dict[str, Any]) -> str:
    """Entrypoint and command of a service as one text."""
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words.extend([value] if isinstance(value, str) else [str(v) for v in value])
    return "\n".join(words)


def _kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    listeners = {}
    for item in value.split(","):
        name, address = item.strip().split("://", 1)
        host, port = address.rsplit(":", 1)
        listeners[name] = (host, int(port))
    return listeners


def _env_example_entries() -> list[tuple[str, str, bool]]:
    """(NAME, value, active) for each `NAME=value` line; `# NAME=value` lines are inactive."""
    entries = []
    for line in ENV_EXAMPLE_FILE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"(?P<hash>#\s?)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", line.strip())
        if match:
            entries.append((match.group("name"), match.group("value").strip(), match.group("hash") is None))
    return entries


# --- compose.yaml -------------------------------------------------------------------


def test_every_service_has_a_pinned_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    unpinned = []
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            if "build" not in svc:
                unpinned.append(f"{name}: neither image nor build")
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if "build" in svc:  # a local name for the built image: any tag but latest
            ok = tag not in ("", "latest")
        else:
            ok = PINNED_TAG.fullmatch(tag) is not None
        if not ok:
            unpinned.append(f"{name}: {image}")
    assert not unpinned, f"images without an exact version tag: {unpinned}"


def test_infrastructure_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    missing = []
    for name in INFRASTRUCTURE:
        check = (services.get(name) or {}).get("healthcheck") or {}
        test = check.get("test")
        if name not in services or check.get("disable") or not test or test in (["NONE"], "NONE"):
            missing.append(name)
    assert not missing, f"infrastructure services without a healthcheck: {missing}"


def test_depends_on_waits_for_healthy_infrastructure_and_finished_init_jobs(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {name: "service_healthy" for name in INFRASTRUCTURE}
    expected |= {name: "service_completed_successfully" for name in INIT_JOBS}
    problems = []
    for name, svc in services.items():
        depends_on = svc.get("depends_on")
        if name in INFRASTRUCTURE:
            continue
        if not isinstance(depends_on, dict) or not depends_on:
            problems.append(f"{name}: needs depends_on with conditions, has {depends_on!r}")
            continue
        for dependency, spec in depends_on.items():
            condition = (spec or {}).get("condition")
            want = expected.get(dependency)
            if condition is None or (want is not None and condition != want):
                problems.append(f"{name} -> {dependency}: condition {condition!r}, expected {want or 'one'!r}")
    assert not problems, "\n".join(problems)


def test_app_services_use_only_settings_field_names(app_services: dict[str, dict[str, Any]]) -> None:
    unknown = {
        name: sorted(set(_environment(svc)) - SETTINGS_ENV_NAMES)
        for name, svc in app_services.items()
        if set(_environment(svc)) - SETTINGS_ENV_NAMES
    }
    assert not unknown, f"environment variables that are not Settings fields: {unknown}"
    hidden = [name for name, svc in app_services.items() if "env_file" in svc]
    assert not hidden, f"configuration from env_file escapes this check: {hidden}"


def test_app_services_reach_infrastructure_by_service_name(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    kafka_env = _environment(services["kafka"])
    advertised = _kafka_listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    inside = {f"{host}:{port}" for host, port in advertised.values() if host in services}
    for name, svc in app_services.items():
        app = _app_settings(svc)  # also proves every value parses into its field's type
        assert app.kafka_bootstrap in inside, f"{name}: KAFKA_BOOTSTRAP {app.kafka_bootstrap} is not {inside}"
        redis = urlparse(app.redis_url)
        assert (redis.hostname, redis.port) == ("redis", REDIS_PORT), f"{name}: REDIS_URL {app.redis_url}"
        s3 = urlparse(app.s3_endpoint_url)
        assert (s3.hostname, s3.port) == ("minio", MINIO_S3_PORT), f"{name}: S3_ENDPOINT_URL {app.s3_endpoint_url}"
        for url in (app.artifacts_url, app.lake_url):
            parsed = urlparse(url)
            assert (parsed.scheme, parsed.netloc) == ("s3", defaults.s3_bucket), f"{name}: {url} is not in the bucket"


def test_published_ports_match_settings_defaults(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    # Kafka: the host reaches the outside listener, which must also advertise that port.
    kafka = services["kafka"]
    kafka_env = _environment(kafka)
    listening = _kafka_listeners(kafka_env["KAFKA_LISTENERS"])
    outside = [
        (listener, port)
        for listener, (host, port) in _kafka_listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"]).items()
        if host in ("localhost", "127.0.0.1")
    ]
    assert outside, "Kafka advertises no listener for the host (localhost)"
    listener, advertised_port = outside[0]
    assert advertised_port == defaults.kafka_port
    assert _published(kafka).get(defaults.kafka_port) == listening[listener][1]

    assert _published(services["redis"]).get(urlparse(defaults.redis_url).port) == REDIS_PORT

    minio = services["minio"]
    assert _published(minio).get(urlparse(defaults.s3_endpoint_url).port) == MINIO_S3_PORT
    console = re.search(r"--console-address[\s=]+\S*:(\d+)", _script(minio))
    assert console, "MinIO runs without a fixed --console-address"
    assert int(console.group(1)) in _published(minio).values(), "the MinIO console port is not published"

    api = app_services["api"]
    assert _published(api).get(defaults.api_port) == _app_settings(api).api_port


def test_kafka_init_creates_the_settings_topics(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    created: dict[str, int | None] = {}
    for line in _script(services["kafka-init"]).splitlines():
        if "--create" in line:
            topic = re.search(r"--topic[\s=]+(\S+)", line)
            partitions = re.search(r"--partitions[\s=]+(\d+)", line)
            assert topic, f"kafka-init creates a topic without --topic: {line}"
            created[topic.group(1)] = int(partitions.group(1)) if partitions else None
    assert set(created) == {defaults.clicks_topic, defaults.dlq_topic}
    assert created[defaults.clicks_topic] == defaults.topic_partitions
    for name, svc in app_services.items():
        app = _app_settings(svc)
        assert {app.clicks_topic, app.dlq_topic} == set(created), f"{name} uses other topics than kafka-init creates"
        assert app.topic_partitions == created[app.clicks_topic], f"{name}: TOPIC_PARTITIONS"


def test_minio_init_creates_the_settings_bucket_with_the_settings_credentials(
    services: dict[str, dict[str, Any]], app_services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    script = _script(services["minio-init"])
    buckets = re.findall(r"\bmc\s+mb\s+(?:--?[\w-]+\s+)*[\w.-]+/([\w.-]+)", script)
    assert buckets == [defaults.s3_bucket]

    minio_env = _environment(services["minio"])
    root = (minio_env.get("MINIO_ROOT_USER"), minio_env.get("MINIO_ROOT_PASSWORD"))
    assert root == (defaults.s3_access_key, defaults.s3_secret_key)
    alias = re.search(r"\bmc\s+alias\s+set\s+\S+\s+\S+\s+(\S+)\s+(\S+)", script)
    assert alias and alias.groups() == root, "minio-init logs in with other credentials than MinIO's root user"
    for name, svc in app_services.items():
        app = _app_settings(svc)
        assert (app.s3_bucket, app.s3_access_key, app.s3_secret_key) == (defaults.s3_bucket, *root), name


# --- .env.example ------------------------------------------------------------------


def test_env_example_lists_every_settings_field_exactly_once() -> None:
    counts = Counter(name for name, _, _ in _env_example_entries())
    assert sorted(name for name, n in counts.items() if n > 1) == [], "listed more than once"
    assert sorted(set(counts) - SETTINGS_ENV_NAMES) == [], "listed but not a Settings field"
    assert sorted(SETTINGS_ENV_NAMES - set(counts)) == [], "Settings fields missing from .env.example"


def test_env_example_active_values_are_the_defaults(defaults: Settings) -> None:
    active = {name.lower(): value for name, value, is_active in _env_example_entries() if is_active}
    assert active, ".env.example sets nothing"
    example = Settings(_env_file=None, **active)
    differing = {field: getattr(example, field) for field in active if getattr(example, field) != getattr(defaults, field)}
    assert not differing, f".env.example values that are not the Settings defaults: {differing}"
