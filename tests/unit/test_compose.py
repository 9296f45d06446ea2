"""docker-compose.yml, Dockerfile and .dockerignore agree with authtrail's settings and CLI.

No Docker engine runs on our machines, so nothing here starts a container: the files are
parsed and compared with the code that will read their values (``Settings.from_env``,
``build_parser``, ``pyproject.toml``). Each check is a function that raises
``AssertionError``; the tests run it on the real files (it must pass) and on tampered
copies (it must fail), so a check that cannot fail is caught too.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from authtrail.cli.main import build_parser
from authtrail.errors import AuthtrailError
from authtrail.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
AUTHTRAIL_SERVICES = ("keygen", "init-db", "worker", "sink", "retention")
EXPECTED_SERVICES = {"kafka", "clickhouse", *AUTHTRAIL_SERVICES}
CLICKHOUSE_HTTP_PORT = 8123  # the image's HTTP interface (docs/DEPLOYMENT.md)

Compose = dict[str, Any]

# --- reading the files --------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``,
    ``${VAR:+alt}`` and ``$$``. A variable with no value and no default is an error here
    (Compose would substitute "" with a warning, which is never what we want)."""

    def substitute(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = environ.get(name)
        present = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("+"):
            return arg if present else ""
        if present:
            return str(value)
        if op.endswith("-"):
            return arg
        raise AssertionError(f"${{{name}}} has no value and no default in {text!r}")

    result = _VARIABLE.sub(substitute, text)
    assert "${" not in result, f"unsupported interpolation left in {text!r}"
    return result


def interpolate_tree(node: Any, environ: Mapping[str, str]) -> Any:
    """Interpolate every string value (not key) of a parsed compose document."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, environ) for item in node]
    return interpolate(node, environ) if isinstance(node, str) else node


def load_compose(environ: Mapping[str, str] | None = None) -> Compose:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # resolves `<<:` merges
    document: Compose = interpolate_tree(raw, environ or {})
    return document


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as strings, from the map or the ``KEY=VALUE`` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """``(source, target, read_only)`` of each volume of a service."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            result.append((source, target, "ro" in ",".join(mode).split(",")))
        else:
            result.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
    return result


def parse_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``PLAINTEXT://kafka:19092,...`` -> ``{"PLAINTEXT": ("kafka", 19092), ...}``."""
    listeners = {}
    for item in value.split(","):
        match = re.fullmatch(r"(\w+)://([^:]*):(\d+)", item.strip())
        assert match, f"cannot parse listener {item!r}"
        listeners[match[1]] = (match[2], int(match[3]))
    return listeners


def subcommands() -> dict[str, argparse.ArgumentParser]:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("authtrail's parser has no subcommands")


def authtrail_argv(service: Mapping[str, Any]) -> list[str]:
    """The arguments given to ``authtrail`` by a service, through the image's entry point
    or through a shell line that runs ``authtrail ...``."""
    command = service.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if "entrypoint" not in service:
        return command
    tokens = shlex.split(" ".join(command))
    assert "authtrail" in tokens, f"shell command {command!r} never runs authtrail"
    argv = tokens[tokens.index("authtrail") + 1 :]
    return argv[: next((i for i, t in enumerate(argv) if t in {"&&", "||", ";"}), len(argv))]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines())
        if parts
    ]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- checks: each raises AssertionError on drift ------------------------------------------


def check_services(compose: Compose) -> None:
    missing = EXPECTED_SERVICES - set(compose["services"])
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def check_authtrail_variables(compose: Compose) -> None:
    fields = {spec.name for spec in dataclasses.fields(Settings)}
    for name, service in compose["services"].items():
        for variable in environment(service):
            if variable.startswith(ENV_PREFIX):
                field = variable.removeprefix(ENV_PREFIX).lower()
                assert field in fields, f"{name}: {variable} is not a Settings field"


def check_bootstrap_servers(compose: Compose) -> None:
    kafka_name = "kafka"
    kafka = compose["services"][kafka_name]
    env = environment(kafka)
    advertised = parse_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = parse_listeners(env["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    resolvable = {kafka_name, kafka.get("hostname", kafka_name)}
    reachable = {
        (host, port): listener
        for listener, (host, port) in advertised.items()
        if host in resolvable
        and bound.get(listener, ("", -1))[1] == port
        and listener not in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
        and protocols.get(listener) == "PLAINTEXT"  # authtrail's clients speak plaintext
    }
    assert reachable, "kafka advertises no PLAINTEXT listener under its service name"
    for name in ("worker", "sink"):
        servers = environment(compose["services"][name])["AUTHTRAIL_BOOTSTRAP_SERVERS"]
        for server in servers.split(","):
            host, _, port = server.strip().rpartition(":")
            assert (host, int(port)) in reachable, (
                f"{name}: AUTHTRAIL_BOOTSTRAP_SERVERS {server!r} is not one of kafka's "
                f"container listeners {sorted(reachable)}"
            )


def check_clickhouse_url(compose: Compose) -> None:
    """init-db holds the administrator's credential; the sink the writer's it created;
    Grafana the analyst's."""
    services = compose["services"]
    clickhouse = environment(services["clickhouse"])
    init_db = environment(services["init-db"])
    admin = urlsplit(init_db["AUTHTRAIL_CLICKHOUSE_URL"])
    sink = urlsplit(environment(services["sink"])["AUTHTRAIL_CLICKHOUSE_URL"])
    for url in (admin, sink):
        assert url.scheme == "http", f"ClickHouse URL scheme {url.scheme!r}"
        assert url.hostname == "clickhouse", f"ClickHouse URL host {url.hostname!r}"
        assert url.port == CLICKHOUSE_HTTP_PORT, f"ClickHouse URL port {url.port}"
        assert url.path.strip("/") == clickhouse["CLICKHOUSE_DB"], "database differs"
    assert unquote(admin.username or "") == clickhouse["CLICKHOUSE_USER"], "user differs"
    assert unquote(admin.password or "") == clickhouse["CLICKHOUSE_PASSWORD"], "password differs"
    assert unquote(sink.username or "") == "writer", "the sink must log in as the writer"
    assert unquote(sink.password or "") == init_db["AUTHTRAIL_WRITER_PASSWORD"], (
        "the sink's password is not the writer's init-db sets"
    )
    retention = urlsplit(environment(services["retention"])["AUTHTRAIL_CLICKHOUSE_URL"])
    assert (retention.hostname, retention.port) == ("clickhouse", CLICKHOUSE_HTTP_PORT)
    assert unquote(retention.username or "") == "retention", (
        "the retention service must log in as the retention user (no administrator)"
    )
    assert unquote(retention.password or "") == init_db["AUTHTRAIL_RETENTION_PASSWORD"], (
        "the retention service's password is not the one init-db sets"
    )
    grafana = environment(services["grafana"])
    assert grafana["CLICKHOUSE_ANALYST_PASSWORD"] == init_db["AUTHTRAIL_ANALYST_PASSWORD"], (
        "Grafana's ClickHouse password is not the analyst's init-db sets"
    )


def check_commands(compose: Compose) -> None:
    known = subcommands()
    used = set()
    for name in AUTHTRAIL_SERVICES:
        argv = authtrail_argv(compose["services"][name])
        assert argv and argv[0] in known, f"{name}: `authtrail {argv}` is not a subcommand"
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"{name}: authtrail rejects arguments {argv}") from exc
        used.add(argv[0])
    assert used == {"keygen", "init-db", "worker", "sink", "retain"}, (
        f"subcommands run: {sorted(used)}"
    )


def check_settings_from_env(compose: Compose) -> None:
    services = compose["services"]
    keygen_argv = authtrail_argv(services["keygen"])
    keygen_dir = PurePosixPath(keygen_argv[keygen_argv.index("--dir") + 1])
    key_volume = {target: source for source, target, _ in mounts(services["keygen"])}
    assert str(keygen_dir) in key_volume, "keygen writes keys outside its volume"
    for name in ("worker", "sink"):
        try:
            settings = Settings.from_env(environment(services[name]))
        except AuthtrailError as exc:
            raise AssertionError(f"{name}: Settings.from_env refuses it: {exc}") from exc
        assert settings.bootstrap_servers, f"{name} would start its own local broker"
        mounted = {target: source for source, target, _ in mounts(services[name])}
        key_paths = [*settings.verifier_key_paths]
        if name == "worker":
            key_paths.append(settings.signing_key_path)
        for path in key_paths:
            directory = str(PurePosixPath(path).parent)
            assert directory == str(keygen_dir), f"{name}: {path} is not where keygen writes"
            assert mounted.get(directory) == key_volume[str(keygen_dir)], (
                f"{name}: {directory} is not the keygen's volume"
            )
    sink = Settings.from_env(environment(services["sink"]))
    assert sink.clickhouse_url, "the sink would write to embedded chdb, not the server"
    check_retention_service(compose, str(keygen_dir), key_volume[str(keygen_dir)])


def check_retention_service(compose: Compose, key_dir: str, key_volume: str) -> None:
    """`retain --all --every` signs with the worker's key, deletes on the server, and
    reads retention_days from a policy file that is mounted and parses."""
    from authtrail.retention import retention_periods

    service = compose["services"]["retention"]
    settings = Settings.from_env(environment(service))
    assert settings.clickhouse_url, "retention would prune an embedded chdb, not the server"
    assert settings.bootstrap_servers, "retention needs the broker to send its statements"
    worker = Settings.from_env(environment(compose["services"]["worker"]))
    assert settings.signing_key_path == worker.signing_key_path, "not the worker's signing key"
    assert str(PurePosixPath(settings.signing_key_path).parent) == key_dir
    assert {target: source for source, target, _ in mounts(service)}.get(key_dir) == key_volume
    policy = settings.privacy_policy_file
    assert policy is not None, "retention without AUTHTRAIL_PRIVACY_POLICY_FILE prunes nothing"
    configs = {item["target"]: item["source"] for item in service.get("configs") or []}
    assert str(policy) in configs, f"{policy} is not mounted into the retention service"
    source = compose["configs"][configs[str(policy)]]["file"]
    retention_periods(ROOT / source)  # raises on a malformed file


def check_worker_scalable(compose: Compose) -> None:
    worker = compose["services"]["worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"worker sets {key}: `--scale worker=2` would collide"
    # The subject key store is the one volume replicas share writable: it is built for
    # concurrent processes (a per-tenant flock), and a key per replica would be wrong.
    key_store = str(Settings.from_env(environment(worker)).privacy_dir)
    for source, target, read_only in mounts(worker):
        assert read_only or target == key_store, (
            f"replicas would share writable volume {source}:{target}"
        )


def check_worker_privacy(compose: Compose) -> None:
    """The worker seals by the policy file the retention service prunes by, and keeps
    subject keys on a named volume: in the container's scratch space they would vanish
    with the container (every sealed value unreadable), and differ between replicas."""
    services = compose["services"]
    worker = Settings.from_env(environment(services["worker"]))
    retention = Settings.from_env(environment(services["retention"]))
    assert worker.privacy_policy_file is not None, "the worker would seal nothing"
    assert worker.privacy_policy_file == retention.privacy_policy_file

    def policy_source(name: str, path: Path) -> str:
        configs = {item["target"]: item["source"] for item in services[name].get("configs") or []}
        assert str(path) in configs, f"{path} is not mounted into {name}"
        return configs[str(path)]

    assert policy_source("worker", worker.privacy_policy_file) == policy_source(
        "retention", worker.privacy_policy_file
    ), "the worker and the retention service read different policy files"
    writable = {target: source for source, target, read_only in mounts(services["worker"])
                if not read_only}  # fmt: skip
    source = writable.get(str(worker.privacy_dir))
    assert source is not None, f"{worker.privacy_dir} is not a writable volume of the worker"
    assert source in (compose.get("volumes") or {}), f"{source} is not a named volume"


def check_images_pinned(compose: Compose) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag not in {"latest", "head"} and re.search(r"\d", tag), (
            f"{name}: image {image!r} is not pinned to a version"
        )
        if name in AUTHTRAIL_SERVICES:
            version = pyproject()["project"]["version"]
            assert tag == version, f"{name}: image tag {tag} != project version {version}"


def check_dependencies(compose: Compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {target} to be healthy but it has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", (
                    f"{name} waits for {target} to finish but it is restarted"
                )
    for name in ("worker", "sink"):
        needs = services[name]["depends_on"]
        assert needs["kafka"]["condition"] == "service_healthy", f"{name} needs kafka"
    assert services["sink"]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["keygen"]["condition"] == (
        "service_completed_successfully"
    )
    # The retention user exists once init-db made it.
    made = services["retention"]["depends_on"].get("init-db", {}).get("condition")
    assert made == "service_completed_successfully", "retention before init-db"
    # The writer cannot create tables: the sink starts once init-db made them.
    init_db = services["sink"]["depends_on"].get("init-db", {})
    assert init_db.get("condition") == "service_completed_successfully", "sink before init-db"


def check_kafka_single_node(compose: Compose) -> None:
    kafka = compose["services"]["kafka"]
    env = environment(kafka)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics must be created explicitly"
    for variable in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
        assert env[f"KAFKA_{variable}_REPLICATION_FACTOR"] == "1", f"{variable} needs 1 replica"
    voters = parse_listeners(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].replace("@", "://"))
    controller = parse_listeners(env["KAFKA_LISTENERS"])[env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
    assert voters == {env["KAFKA_NODE_ID"]: (kafka["hostname"], controller[1])}, "bad voters"
    assert env["KAFKA_LOG_DIRS"] in {target for _, target, _ in mounts(kafka)}, "data not kept"
    health = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-" in health, "healthcheck must use a script the image ships"
    for name in ("worker", "sink"):
        factor = int(environment(compose["services"][name])["AUTHTRAIL_REPLICATION_FACTOR"])
        assert factor == 1, f"{name}: replication factor {factor} on a one-broker cluster"


def check_volumes_declared(compose: Compose) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _, _ in mounts(service):
            assert not source.startswith((".", "/")), f"{name} bind-mounts {source}"
            assert source in declared, f"{name}: volume {source} is not declared"


COMPOSE_CHECKS: list[Callable[[Compose], None]] = [
    check_services,
    check_authtrail_variables,
    check_bootstrap_servers,
    check_clickhouse_url,
    check_commands,
    check_settings_from_env,
    check_worker_scalable,
    check_images_pinned,
    check_dependencies,
    check_kafka_single_node,
    check_volumes_declared,
    check_worker_privacy,
]


def check_dockerfile(text: str, compose: Compose) -> None:
    instructions = dockerfile_instructions(text)
    entrypoint = json.loads(next(a for i, a in reversed(instructions) if i == "ENTRYPOINT"))
    scripts = pyproject()["project"]["scripts"]
    assert entrypoint == ["authtrail"] and "authtrail" in scripts, (
        f"ENTRYPOINT {entrypoint} is not the console script in {sorted(scripts)}"
    )
    module_name, _, function_name = scripts["authtrail"].partition(":")
    assert callable(getattr(importlib.import_module(module_name), function_name, None)), (
        f"console script target {scripts['authtrail']} does not exist"
    )
    runtime_base = [a for i, a in instructions if i == "FROM"][-1].split()[0]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", runtime_base), f"base {runtime_base}"
    user = [a for i, a in instructions if i == "USER"][-1].split(":")[0]
    assert user not in {"root", "0"}, "the image must not run as root"
    # The paths given to `chown OWNER path...` (up to the next && ; |) in any RUN line.
    chowned = [
        path
        for _, arguments in (i for i in instructions if i[0] == "RUN")
        for match in re.finditer(r"chown\s+(?:-\S+\s+)*\S+\s+([^&;|]+)", arguments)
        for path in match[1].split()
    ]
    for name in AUTHTRAIL_SERVICES:
        service = compose["services"][name]
        writable = [target for _, target, _ in mounts(service)]
        writable += [environment(service).get(f"{ENV_PREFIX}DATA_DIR", "")]
        for target in filter(None, writable):
            assert target in chowned, f"{target} is used by {name} but not owned by {user}"
    for item in shlex.split(" ".join(a for i, a in instructions if i == "ENV")):
        variable = item.split("=", 1)[0]
        if variable.startswith(ENV_PREFIX):
            assert variable.removeprefix(ENV_PREFIX).lower() in {
                spec.name for spec in dataclasses.fields(Settings)
            }, f"Dockerfile ENV {variable} is not a Settings field"


def check_dockerignore(text: str) -> None:
    patterns = [line.strip() for line in text.splitlines() if line.strip()[:1] not in {"", "#"}]
    if "*" not in patterns:
        return  # a denylist lets packages through unless it names them
    project = pyproject()
    # The packages, and the top folders authtrail/'s symlinks lead to (both distributions'
    # files: producers/pyproject.toml is inside producers/).
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    linked = [p.name for p in (ROOT / "authtrail").iterdir() if p.is_symlink()]
    wanted = ["pyproject.toml", *packages, *linked]
    if isinstance(project["project"].get("readme"), str):
        wanted.append(project["project"]["readme"])  # the build reads it for metadata
    for path in wanted:
        assert f"!{path}" in patterns, f".dockerignore keeps {path} out of the build context"


# --- tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.mark.parametrize("check", COMPOSE_CHECKS, ids=lambda check: check.__name__)
def test_compose_file_passes(check: Callable[[Compose], None], compose: Compose) -> None:
    check(compose)


def test_dockerfile_passes(compose: Compose) -> None:
    check_dockerfile((ROOT / "Dockerfile").read_text(), compose)


def test_dockerignore_passes() -> None:
    check_dockerignore((ROOT / ".dockerignore").read_text())


def test_clickhouse_credentials_follow_the_same_variables() -> None:
    # One variable sets the password in both places; a second literal copy would drift.
    custom = load_compose({"AUTHTRAIL_CH_USER": "admin", "AUTHTRAIL_CH_PASSWORD": "0f1e2d3c",
                           "AUTHTRAIL_CH_WRITER_PASSWORD": "4b5a6978",
                           "AUTHTRAIL_CH_ANALYST_PASSWORD": "1a2b3c4d"})  # fmt: skip
    check_clickhouse_url(custom)
    assert environment(custom["services"]["clickhouse"])["CLICKHOUSE_PASSWORD"] == "0f1e2d3c"
    sink_url = environment(custom["services"]["sink"])["AUTHTRAIL_CLICKHOUSE_URL"]
    assert sink_url.startswith("http://writer:4b5a6978@")


def test_interpolation_known_answers() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}", env) == "x/d//d"
    assert interpolate("$$SET ${SET:+alt} ${UNSET:+alt}.", env) == "$SET alt ."
    with pytest.raises(AssertionError):
        interpolate("${UNSET:?required}", env)
    with pytest.raises(AssertionError):
        interpolate("${UNSET}", env)


def _set(document: Compose, path: str, value: Any) -> None:
    """Set ``services.<path>`` (dotted) to ``value``; ``None`` deletes it."""
    *parents, last = path.split(".")
    node = document["services"]
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


def _clickhouse_url(host_port: str) -> str:
    return f"http://authtrail:change-me@{host_port}/authtrail"


BOOTSTRAP = "environment.AUTHTRAIL_BOOTSTRAP_SERVERS"
CLICKHOUSE_URL = "sink.environment.AUTHTRAIL_CLICKHOUSE_URL"
KAFKA_ENV = "kafka.environment"

# (check that must notice it, services.<path> to change, new value or None to delete)
TAMPERED: list[tuple[Callable[[Compose], None], str, Any]] = [
    (check_services, "sink", None),
    (check_authtrail_variables, "worker.environment.AUTHTRAIL_PARTITION", "4"),
    (check_bootstrap_servers, f"worker.{BOOTSTRAP}", "localhost:9092"),
    (check_bootstrap_servers, f"sink.{BOOTSTRAP}", "kafka:9092"),
    (check_bootstrap_servers, f"sink.{BOOTSTRAP}", "kafka:29093"),
    (check_clickhouse_url, "clickhouse.environment.CLICKHOUSE_PASSWORD", "other"),
    (check_clickhouse_url, "clickhouse.environment.CLICKHOUSE_DB", "default"),
    (check_clickhouse_url, CLICKHOUSE_URL, _clickhouse_url("localhost:8123")),
    (check_clickhouse_url, CLICKHOUSE_URL, _clickhouse_url("clickhouse:9000")),
    # The sink with the administrator's credential, or a writer password init-db never set.
    (check_clickhouse_url, CLICKHOUSE_URL, _clickhouse_url("clickhouse:8123")),
    (check_clickhouse_url, "init-db.environment.AUTHTRAIL_WRITER_PASSWORD", "other"),
    (check_clickhouse_url, "grafana.environment.CLICKHOUSE_ANALYST_PASSWORD", "other"),
    (check_dependencies, "sink.depends_on.init-db", None),
    (check_dependencies, "retention.depends_on.init-db", None),
    (
        check_clickhouse_url,
        "retention.environment.AUTHTRAIL_CLICKHOUSE_URL",
        "http://authtrail:change-me@clickhouse:8123/authtrail",
    ),
    (check_clickhouse_url, "init-db.environment.AUTHTRAIL_RETENTION_PASSWORD", "other"),
    (check_commands, "retention.command", ["retain", "--all", "--every", "hourly"]),
    (check_settings_from_env, "retention.environment.AUTHTRAIL_PRIVACY_POLICY_FILE", "/etc/x"),
    (check_settings_from_env, "retention.environment.AUTHTRAIL_SIGNING_KEY", "/etc/signer.key"),
    (check_settings_from_env, "retention.configs", []),
    (check_commands, "worker.command", ["wroker"]),
    (check_commands, "keygen.command", ["authtrail keygen --directory /keys"]),
    (check_settings_from_env, "worker.environment.AUTHTRAIL_PARTITIONS", "four"),
    (check_settings_from_env, "worker.environment.AUTHTRAIL_SIGNING_KEY", "/etc/signer.key"),
    (check_settings_from_env, "sink.volumes", None),
    (check_settings_from_env, CLICKHOUSE_URL, ""),
    (check_worker_scalable, "worker.container_name", "authtrail-worker"),
    (check_worker_scalable, "worker.ports", ["6066:6066"]),
    (check_worker_scalable, "worker.volumes", ["keys:/keys"]),
    (check_worker_scalable, "worker.volumes", ["keys:/keys:ro", "scratch:/var/lib/authtrail"]),
    (check_worker_privacy, "worker.volumes", ["keys:/keys:ro"]),
    (check_worker_privacy, "worker.volumes", ["./k:/var/lib/authtrail/privacy"]),
    (check_worker_privacy, "worker.environment.AUTHTRAIL_PRIVACY_POLICY_FILE", None),
    (check_worker_privacy, "worker.environment.AUTHTRAIL_PRIVACY_POLICY_FILE", "/etc/other.json"),
    (check_worker_privacy, "worker.configs", []),
    (check_images_pinned, "kafka.image", "apache/kafka:latest"),
    (check_images_pinned, "clickhouse.image", "clickhouse/clickhouse-server"),
    (check_images_pinned, "worker.image", "authtrail:0.0.1"),
    (check_dependencies, "kafka.healthcheck", None),
    (check_dependencies, "keygen.restart", "always"),
    (check_kafka_single_node, f"{KAFKA_ENV}.KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true"),
    (check_kafka_single_node, f"{KAFKA_ENV}.KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka:9093"),
    (check_kafka_single_node, "kafka.volumes", []),
    (check_volumes_declared, "sink.volumes", ["./keys:/keys:ro"]),
]


@pytest.mark.parametrize(
    ("check", "path", "value"),
    TAMPERED,
    ids=[f"{check.__name__}:{path}={value}" for check, path, value in TAMPERED],
)
def test_tampered_compose_fails(
    check: Callable[[Compose], None], path: str, value: Any, compose: Compose
) -> None:
    tampered = copy.deepcopy(compose)
    _set(tampered, path, value)
    with pytest.raises(AssertionError):
        check(tampered)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('ENTRYPOINT ["authtrail"]', 'ENTRYPOINT ["authtrail-worker"]'),
        ("USER authtrail:authtrail", "USER root"),
        ("chown authtrail:authtrail /keys", "chown authtrail:authtrail"),
        ("AUTHTRAIL_DATA_DIR=", "AUTHTRAIL_DATADIR="),
        ("FROM python:3.11-slim-bookworm\n", "FROM python:3.10-slim\n"),
    ],
)
def test_tampered_dockerfile_fails(old: str, new: str, compose: Compose) -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert old in text, f"tamper target {old!r} not in Dockerfile"
    with pytest.raises(AssertionError):
        check_dockerfile(text.replace(old, new), compose)


def test_tampered_dockerignore_fails() -> None:
    text = (ROOT / ".dockerignore").read_text()
    assert "!stream\n" in text
    with pytest.raises(AssertionError):
        check_dockerignore(text.replace("!stream\n", ""))
