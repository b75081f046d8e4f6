"""The deployment files match the code: compose services, environment variable names,
ports, topics, Prometheus scraping and alert rules, the Grafana dashboard's metric names,
the Kafka-engine DDL's columns, and the Dockerfile's install order and user.

Fast and offline: no Docker engine, no broker, no ClickHouse. The YAML files are read with
PyYAML when it is importable (or through a system ``python3`` that has it); otherwise with
the small reader below, which understands the plain YAML subset these files are kept in
(block mappings and sequences, quoted and plain scalars, one-line flow sequences, literal
``|`` blocks). Where real YAML is available, a test checks that both readers agree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from stream_scorer import metrics
from ja4_core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.kafka.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ja4-stream-dashboard.json"
KAFKA_ENGINE_SQL = ROOT / "deploy" / "clickhouse" / "kafka_engine.sql"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OPERATIONS = ROOT / "docs" / "operations.md"

SETTING_ENV = {f.metadata["env"]: f for f in fields(Settings)}
DEFAULTS = Settings()
PRODUCT_SERVICES = ("scorer", "sink", "trainer", "trainer-init")


# --- a reader for the YAML subset of our files ---------------------------------------------

class _MiniYaml:
    """Block mappings/sequences by indentation, scalars, ``[a, b]``, ``{}`` and ``|``/``|-``."""

    _KEY = re.compile(r"""^("[^"]*"|'[^']*'|[A-Za-z0-9_.\-/$]+)\s*:(?:\s+|$)""")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    def parse(self) -> Any:
        nxt = self._peek()
        if nxt is None:
            return None
        value = self._block(nxt[0])
        if self._peek() is not None:
            raise ValueError(f"line {self.i + 1}: unexpected content {self.lines[self.i]!r}")
        return value

    # lines
    def _peek(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            content = raw.strip()
            if content and not content.startswith("#"):
                if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                    raise ValueError(f"line {self.i + 1}: tab in indentation")
                return len(raw) - len(raw.lstrip(" ")), content
            self.i += 1
        return None

    @staticmethod
    def _strip_comment(text: str) -> str:
        quote = None
        for pos, ch in enumerate(text):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'" and (pos == 0 or text[pos - 1] in " [,:"):
                quote = ch
            elif ch == "#" and (pos == 0 or text[pos - 1] in " \t"):
                return text[:pos].rstrip()
        return text.rstrip()

    # structure
    def _block(self, indent: int) -> Any:
        _, content = self._peek()  # type: ignore[misc]
        if content == "-" or content.startswith("- "):
            return self._seq(indent)
        return self._map(indent)

    def _map(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (nxt := self._peek()) is not None and nxt[0] >= indent:
            if nxt[0] > indent:
                raise ValueError(f"line {self.i + 1}: unexpected indentation")
            content = self._strip_comment(nxt[1])
            match = self._KEY.match(content)
            if content.startswith("- ") or match is None:
                raise ValueError(f"line {self.i + 1}: expected 'key: value', got {content!r}")
            key = self._scalar(match.group(1))
            if key in out:
                raise ValueError(f"line {self.i + 1}: duplicate key {key!r}")
            self.i += 1
            out[key] = self._value(content[match.end():].strip(), indent)
        return out

    def _seq(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (nxt := self._peek()) is not None and nxt[0] >= indent:
            if nxt[0] > indent:
                raise ValueError(f"line {self.i + 1}: unexpected indentation")
            content = nxt[1]
            if not (content == "-" or content.startswith("- ")):
                break
            item = self._strip_comment(content[2:].strip())
            if item == "":
                self.i += 1
                sub = self._peek()
                out.append(self._block(sub[0]) if sub and sub[0] > indent else None)
            elif item[0] not in "\"'[{" and self._KEY.match(item):
                # "- key: value" opens a mapping whose keys sit two columns in.
                self.lines[self.i] = " " * (indent + 2) + content[2:].lstrip()
                out.append(self._map(indent + 2))
            elif item in ("|", "|-"):
                self.i += 1
                out.append(self._literal(indent, keep_newline=item == "|"))
            else:
                self.i += 1
                out.append(self._flow(item))
        return out

    def _value(self, rest: str, indent: int) -> Any:
        if rest in ("|", "|-"):
            return self._literal(indent, keep_newline=rest == "|")
        if rest == "":
            nxt = self._peek()
            if nxt is not None and nxt[0] > indent:
                return self._block(nxt[0])
            return None
        return self._flow(rest)

    def _literal(self, indent: int, keep_newline: bool) -> str:
        body: list[str] = []
        block_indent = None
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            if raw.strip():
                ind = len(raw) - len(raw.lstrip(" "))
                if ind <= indent:
                    break
                if block_indent is None:
                    block_indent = ind
                if ind < block_indent:
                    raise ValueError(f"line {self.i + 1}: literal block dedented")
                body.append(raw[block_indent:])
            else:
                body.append("")
            self.i += 1
        while body and body[-1] == "":
            body.pop()
        text = "\n".join(body)
        return text + "\n" if keep_newline and text else text

    # scalars
    def _flow(self, text: str) -> Any:
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(f"line {self.i}: multi-line flow sequences are not supported: {text!r}")
            inner = text[1:-1].strip()
            if not inner:
                return []
            items, quote, start = [], None, 0
            for pos, ch in enumerate(inner):
                if quote:
                    if ch == quote:
                        quote = None
                elif ch in "\"'":
                    quote = ch
                elif ch == ",":
                    items.append(inner[start:pos].strip())
                    start = pos + 1
            items.append(inner[start:].strip())
            return [self._scalar(x) for x in items]
        if text.startswith("{"):
            if text.replace(" ", "") != "{}":
                raise ValueError(f"line {self.i}: only empty flow mappings are supported: {text!r}")
            return {}
        return self._scalar(text)

    @staticmethod
    def _scalar(text: str) -> Any:
        if text.startswith('"'):
            return json.loads(text)
        if text.startswith("'"):
            if not text.endswith("'") or len(text) < 2:
                raise ValueError(f"unterminated quote: {text!r}")
            return text[1:-1].replace("''", "'")
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
        if text in ("null", "Null", "NULL", "~"):
            return None
        if text.lower() in ("yes", "no", "on", "off"):
            raise ValueError(f"ambiguous YAML 1.1 boolean {text!r}: quote it")
        if re.fullmatch(r"[-+]?[0-9]+", text):
            return int(text)
        if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
            return float(text)
        if re.fullmatch(r"[0-9]+(:[0-5]?[0-9])+", text):
            raise ValueError(f"YAML 1.1 reads {text!r} as a base-60 number: quote it")
        return text


def mini_yaml(text: str) -> Any:
    return _MiniYaml(text).parse()


def _real_yaml_loader():
    """PyYAML's safe_load, in this interpreter or through a system python3; else None."""
    try:
        import yaml  # type: ignore[import-untyped]

        return yaml.safe_load
    except ImportError:
        pass
    for exe in ("/usr/bin/python3", shutil.which("python3")):
        if not exe or not Path(exe).exists():
            continue
        code = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"
        try:
            probe = subprocess.run([exe, "-c", code], input="a: 1", capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            def load(text: str, _exe: str = exe) -> Any:
                done = subprocess.run([_exe, "-c", code], input=text, capture_output=True, text=True,
                                      timeout=30, check=True)
                return json.loads(done.stdout)
            return load
    return None


REAL_YAML = _real_yaml_loader()


def load_yaml(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return REAL_YAML(text) if REAL_YAML else mini_yaml(text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml(PROMETHEUS)


@pytest.fixture(scope="module")
def alerts() -> dict[str, Any]:
    return load_yaml(ALERTS)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


# --- helpers ------------------------------------------------------------------------------

def interpolate(value: Any) -> str:
    """Compose interpolation with the defaults written in the file (the shell is ignored)."""
    text = str(value)
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", text)
    return text.replace("$$", "$")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        env = out
    return {k: interpolate(v) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


def setting(env: dict[str, str], name: str) -> Any:
    """The value the process would use: the compose value, else the code's default."""
    return getattr(load_settings(environ=env), name)


def volume_at(service: dict[str, Any], target: str) -> str | None:
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("target") == target:
                return vol.get("source")
            continue
        parts = str(vol).split(":")
        if len(parts) >= 2 and parts[1] == target:
            return parts[0]
    return None


def _sample_names() -> dict[str, set[str]]:
    """Every sample name the scorer's REGISTRY can expose, with the labels it may carry."""
    labelnames = {}
    for obj in vars(metrics).values():
        name = getattr(obj, "_name", None)
        if isinstance(name, str) and hasattr(obj, "_labelnames"):
            labelnames[name] = set(obj._labelnames)  # noqa: SLF001
    # Info labels are the keys the model holder passes to MODEL_INFO.info().
    holder_src = (ROOT / "stream_scorer" / "model_holder.py").read_text(encoding="utf-8")
    info_labels = {k for k in ("model_name", "model_version") if f'"{k}"' in holder_src}
    out: dict[str, set[str]] = {}
    for family in metrics.REGISTRY.collect():
        labels = set(labelnames.get(family.name, set())) | set(labelnames.get(family.name + "_total", set()))
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                    "gauge": ("",), "info": ("_info",), "summary": ("", "_count", "_sum", "_created")}[family.type]
        for suffix in suffixes:
            extra = {"le"} if suffix == "_bucket" else set()
            if family.type == "info":
                extra |= info_labels
            out[family.name + suffix] = labels | extra
    return out


SAMPLES = _sample_names()
TARGET_LABELS = {"job", "instance", "service"}  # added by Prometheus and deploy/prometheus.yml


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def check_promql(expr: str, where: str, legend: str = "") -> set[str]:
    """Metric names used in ``expr`` (ja4_*), after checking they and their labels exist."""
    bare = _without_strings(expr)
    used = set(re.findall(r"\bja4_[A-Za-z0-9_]*", bare))
    unknown = used - SAMPLES.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exposed by stream_scorer.metrics (expr {expr!r})"
    allowed = set(TARGET_LABELS) | {"le"}
    for name in used:
        allowed |= SAMPLES[name]
    for name, matchers in re.findall(r"\b(ja4_[A-Za-z0-9_]*)\s*\{([^}]*)\}", expr):
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            assert label in SAMPLES[name] | TARGET_LABELS, f"{where}: {name} has no label {label!r}"
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare):
        for label in (x.strip() for x in group.split(",") if x.strip()):
            assert label in allowed, f"{where}: grouping by unknown label {label!r} in {expr!r}"
    for label in re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend):
        assert label in allowed, f"{where}: legend uses unknown label {label!r}"
    return used


# --- the YAML reader itself ---------------------------------------------------------------

@pytest.mark.parametrize("path", [COMPOSE, PROMETHEUS, ALERTS], ids=lambda p: p.name)
def test_files_parse_with_the_subset_reader(path: Path) -> None:
    assert isinstance(mini_yaml(path.read_text(encoding="utf-8")), dict)


@pytest.mark.skipif(REAL_YAML is None, reason="no PyYAML here or in a system python3")
@pytest.mark.parametrize("path", [COMPOSE, PROMETHEUS, ALERTS], ids=lambda p: p.name)
def test_subset_reader_agrees_with_pyyaml(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert mini_yaml(text) == REAL_YAML(text)


def test_subset_reader_basics() -> None:
    doc = mini_yaml('a: 1\nb:\n  - "x: y"  # c\n  - k: v\n    n: [1, "p, q"]\nc: |\n  line 1\n  # kept\nd:\n')
    assert doc == {"a": 1, "b": ["x: y", {"k": "v", "n": [1, "p, q"]}], "c": "line 1\n# kept\n", "d": None}
    with pytest.raises(ValueError):
        mini_yaml("a: yes\n")


# --- compose ------------------------------------------------------------------------------

def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "clickhouse", "topics-init", "scorer", "sink", "trainer", "trainer-init",
                 "prometheus", "grafana"):
        assert name in services, f"service {name} missing"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    kafka_env = env_of(services["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"] and "broker" in kafka_env["KAFKA_PROCESS_ROLES"]
    assert "ZOOKEEPER" not in " ".join(kafka_env), "single-node KRaft, no ZooKeeper"


@pytest.mark.parametrize("name", PRODUCT_SERVICES)
def test_product_services_use_only_setting_env_names(compose: dict[str, Any], name: str) -> None:
    env = env_of(compose["services"][name])
    assert env, f"{name} has no environment"
    unknown = sorted(set(env) - SETTING_ENV.keys())
    assert not unknown, f"{name}: {unknown} are not settings (ja4_core/settings.py)"
    load_settings(environ=env)  # every value passes the settings' own validation


@pytest.mark.parametrize("name,command", [("scorer", ["stream-scorer", "worker"]),
                                          ("sink", ["stream-scorer", "sink"]),
                                          ("trainer", ["stream-trainer", "loop"]),
                                          ("trainer-init", ["stream-trainer", "init-db"])])
def test_product_commands_exist(compose: dict[str, Any], name: str, command: list[str]) -> None:
    from stream_scorer.cli import build_parser as scorer_parser
    from trainer.cli import build_parser as trainer_parser

    assert command_of(compose["services"][name]) == command
    parser = scorer_parser() if command[0] == "stream-scorer" else trainer_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")  # noqa: SLF001
    assert command[1] in sub.choices
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(command[0])}\s*=", pyproject, re.M), f"{command[0]} is not a console script"


def test_scorer_scales(compose: dict[str, Any]) -> None:
    scorer = compose["services"]["scorer"]
    assert "ports" not in scorer, "a fixed host port collides with `--scale scorer=N`"
    assert "container_name" not in scorer, "container_name prevents `--scale scorer=N`"
    assert "hostname" not in scorer, "replicas would share one hostname (the /model replica id)"
    env = env_of(scorer)
    assert setting(env, "scorer_web_host") == "0.0.0.0", "the web server must listen on the container network"
    assert str(setting(env, "scorer_web_port")) in [str(p) for p in scorer.get("expose", [])]


def test_model_store_is_shared_by_scorer_and_trainer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scorer, trainer = services["scorer"], services["trainer"]
    path = setting(env_of(scorer), "model_store")
    assert path == setting(env_of(trainer), "model_store") == "/var/lib/ja4/models"
    volume = volume_at(scorer, path)
    assert volume and volume == volume_at(trainer, path), "same volume at MODEL_STORE in scorer and trainer"
    assert volume in (compose.get("volumes") or {}), f"named volume {volume} not declared"


def test_connections_point_at_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka_env = env_of(services["kafka"])
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    for name in PRODUCT_SERVICES:
        env = env_of(services[name])
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            for server in setting(env, "kafka_bootstrap_servers").split(","):
                assert server.split(":")[0] in services, f"{name}: {server} is not a compose service"
                assert "//" + server in advertised, f"{name}: {server} is not an advertised listener"
        if name != "scorer":
            url = setting(env, "clickhouse_url")
            assert url == "http://default:@clickhouse:8123/ja4", f"{name}: CLICKHOUSE_URL {url}"
    assert env_of(services["clickhouse"]).get("CLICKHOUSE_DB") == "ja4"
    # the trainer announces on the topic the scorers follow, with the same signing key
    scorer_env, trainer_env = env_of(services["scorer"]), env_of(services["trainer"])
    for name in ("topic_control", "model_name", "control_signing_key"):
        assert setting(scorer_env, name) == setting(trainer_env, name), name


def test_topics_init_creates_the_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["topics-init"]
    script = "\n".join(command_of(init)) if not isinstance(init.get("command"), str) else init["command"]
    created: dict[str, dict[str, Any]] = {}
    for line in script.splitlines():
        if "--create" not in line:
            continue
        topic = re.search(r"--topic\s+(\S+)", line).group(1)
        created[topic] = {"partitions": int(re.search(r"--partitions\s+(\d+)", line).group(1)),
                          "config": dict(kv.split("=", 1) for kv in re.findall(r"--config\s+(\S+)", line))}
    assert all("--if-not-exists" in ln for ln in script.splitlines() if "--create" in ln), "must be re-runnable"
    env = env_of(services["scorer"])
    partitions = setting(env, "topic_partitions")
    for name in ("topic_features", "topic_scores", "topic_dlq"):
        topic = setting(env, name)
        assert topic in created, f"{topic} not created"
        assert created[topic]["partitions"] == partitions, f"{topic}: partitions != TOPIC_PARTITIONS"
        assert created[topic]["partitions"] >= 2, "a single partition allows a single busy replica"
    control = created[setting(env, "topic_control")]
    assert control["config"].get("cleanup.policy") == "compact"
    assert control["partitions"] == 1
    assert services["topics-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("scorer", "sink", "trainer"):
        assert services[name]["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
    for name in ("sink", "trainer"):
        assert services[name]["depends_on"]["trainer-init"]["condition"] == "service_completed_successfully"


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "healthcheck" not in services["scorer"], "the scorer uses the image's /live HEALTHCHECK"
    assert services["trainer"]["healthcheck"] == {"disable": True}, "the trainer has no web server"
    sink = services["sink"]
    port = setting(env_of(sink), "sink_web_port")
    assert f"127.0.0.1:{port}/health" in " ".join(sink["healthcheck"]["test"])


# --- Prometheus and alerts -----------------------------------------------------------------

def test_prometheus_scrapes_every_scorer_replica(compose: dict[str, Any], prometheus: dict[str, Any]) -> None:
    scorer_env = env_of(compose["services"]["scorer"])
    port = setting(scorer_env, "scorer_web_port")
    assert port == DEFAULTS.scorer_web_port
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "ja4-scorer")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    sd = job["dns_sd_configs"]
    assert any("scorer" in c["names"] or "tasks.scorer" in c["names"] for c in sd)
    assert all(c["port"] == port for c in sd), "scrape port != SCORER_WEB_PORT"
    assert all(c.get("type", "A") == "A" for c in sd)
    prom = compose["services"]["prometheus"]
    assert volume_at(prom, "/etc/prometheus/prometheus.yml") == "./deploy/prometheus.yml"
    for rule_file in prometheus["rule_files"]:
        source = volume_at(prom, rule_file)
        assert source and (ROOT / source).is_file(), f"rule file {rule_file} not mounted"


def test_alert_rules_use_real_metrics(alerts: dict[str, Any]) -> None:
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    for needed in ("Ja4ScorerDown", "Ja4ScorerNotReady", "Ja4NoModelActive", "Ja4ConsumerLagGrowing",
                   "Ja4DlqRateHigh", "Ja4ReloadRefused", "Ja4EndToEndLatencyHigh"):
        assert needed in names, f"alert {needed} missing"
    used: set[str] = set()
    for rule in rules:
        used |= check_promql(rule["expr"], f"alert {rule['alert']}")
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert "ja4_reloads_total" in used and "ja4_dlq_total" in used
    ops = OPERATIONS.read_text(encoding="utf-8")
    for name in names:
        assert name in ops, f"docs/operations.md does not explain {name}"


# --- Grafana ------------------------------------------------------------------------------

def _targets(dashboard: dict[str, Any]):
    for panel in dashboard["panels"]:
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                yield sub["title"], target


def test_dashboard_uses_only_exposed_metrics(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    for title, target in _targets(dashboard):
        used |= check_promql(target["expr"], f"panel {title!r}", target.get("legendFormat", ""))
    exprs = " ".join(t["expr"] for _, t in _targets(dashboard))
    needed = ["ja4_records_scored_total", "ja4_dlq_total", "ja4_batch_records_bucket",
              "ja4_batch_scoring_seconds_bucket", "ja4_end_to_end_lag_seconds_bucket",
              "ja4_consumer_lag_records", "ja4_active_model_info", "ja4_reloads_total", "ja4_process_rss_bytes"]
    for name in needed:
        assert name in used, f"no panel shows {name}"
    assert re.search(r"by \(threat_level\)\s*\(rate\(ja4_records_scored_total", exprs)
    assert re.search(r"by \(reason\)\s*\(rate\(ja4_dlq_total", exprs)
    assert re.search(r"by \(partition\)\s*\(ja4_consumer_lag_records", exprs)
    assert re.search(r"by \(outcome\)", exprs)
    for hist in ("ja4_batch_records", "ja4_batch_scoring_seconds", "ja4_end_to_end_lag_seconds"):
        for q in ("0.5", "0.99"):
            assert f"histogram_quantile({q}, sum by (le) (rate({hist}_bucket" in exprs, f"{hist} p{q}"


def test_dashboard_is_provisioned(compose: dict[str, Any], dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    grafana = compose["services"]["grafana"]
    mounted = [str(v).split(":") for v in grafana["volumes"]]
    target = next(t for s, t, *_ in mounted if s == "./deploy/grafana/ja4-stream-dashboard.json")
    provider = mini_yaml(compose["configs"]["grafana-dashboards"]["content"])
    assert provider["providers"][0]["options"]["path"] == str(Path(target).parent)
    datasource = mini_yaml(compose["configs"]["grafana-datasource"]["content"])
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# --- ClickHouse Kafka engine --------------------------------------------------------------

def test_kafka_engine_ddl_matches_ml_all_scores() -> None:
    from ja4_core.clickhouse_io import SCORE_COLUMNS

    sql = KAFKA_ENGINE_SQL.read_text(encoding="utf-8")
    assert "tested in ci on the embedded clickhouse, not against a broker" in sql.lower()
    table = re.search(r"CREATE TABLE IF NOT EXISTS ja4\.ml_all_scores\s*\((.*?)\)\s*ENGINE = ([^;]*);", sql, re.S)
    columns = re.findall(r"`(\w+)`\s+([^\n]+?),?\n", table.group(1) + "\n")
    assert [(c, t.rstrip(",")) for c, t in columns] == list(SCORE_COLUMNS)
    engine = " ".join(table.group(2).split())
    assert engine == "ReplacingMergeTree(scored_at) ORDER BY (window_start, src_ip, ja4, host, model_version)"
    src = (ROOT / "ja4_core" / "clickhouse_io.py").read_text(encoding="utf-8")
    assert "ENGINE = ReplacingMergeTree(scored_at) ORDER BY (window_start, src_ip, ja4, host, model_version)" in src
    kafka = re.search(r"ENGINE = Kafka\s+SETTINGS(.*?);", sql, re.S).group(1)
    assert "kafka_topic_list = 'ja4.scores'" in kafka and "kafka_format = 'JSONEachRow'" in kafka
    assert "kafka_handle_error_mode = 'stream'" in kafka
    view = re.search(r"CREATE MATERIALIZED VIEW IF NOT EXISTS ja4\.ml_all_scores_kafka_mv TO ja4\.ml_all_scores AS"
                     r"\s*SELECT(.*?)\nFROM", sql, re.S).group(1)
    aliases = [re.split(r"\bAS\b", line)[-1].strip(" ,") for line in view.strip().splitlines()]
    assert aliases == [c for c, _ in SCORE_COLUMNS], "the view must fill every column, in order"


def test_kafka_engine_ddl_matches_ml_shadow_scores() -> None:
    from ja4_core.clickhouse_io import SHADOW_COLUMNS

    sql = KAFKA_ENGINE_SQL.read_text(encoding="utf-8")
    table = re.search(r"CREATE TABLE IF NOT EXISTS ja4\.ml_shadow_scores\s*\((.*?)\)\s*ENGINE = ([^;]*);", sql, re.S)
    columns = re.findall(r"`(\w+)`\s+([^\n]+?),?\n", table.group(1) + "\n")
    assert [(c, t.rstrip(",")) for c, t in columns] == list(SHADOW_COLUMNS)
    engine = " ".join(table.group(2).split())
    order = "ReplacingMergeTree(scored_at) ORDER BY (model_name, model_version, window_start, src_ip, ja4, host)"
    assert engine == order and order in (ROOT / "ja4_core" / "clickhouse_io.py").read_text(encoding="utf-8")
    view = re.search(r"CREATE MATERIALIZED VIEW IF NOT EXISTS ja4\.ml_shadow_scores_kafka_mv TO ja4\.ml_shadow_scores AS"
                     r"\s*SELECT(.*?)\nFROM", sql, re.S).group(1)
    aliases = [re.split(r"\bAS\b", line)[-1].strip(" ,") for line in view.strip().splitlines()]
    assert aliases == [c for c, _ in SHADOW_COLUMNS], "the view must fill every column, in order"


# --- Dockerfile -----------------------------------------------------------------------------

def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile() -> None:
    steps = _instructions()
    args = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value)
    stages: list[list[tuple[str, str]]] = []
    for word, rest in steps:
        if word == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            assert image == "python:3.11-slim", f"base image {image}"
            stages.append([])
        elif stages:
            stages[-1].append((word, rest))
    runs = [(i, s, rest) for s, stage in enumerate(stages) for i, (w, rest) in enumerate(stage) if w == "RUN"]
    torch = [(s, i) for i, s, r in runs if "torch==2.13.0" in r and "download.pytorch.org/whl/cpu" in r]
    package = [(s, i) for i, s, r in runs if re.search(r"pip install \.(\s|$|&)", r)]
    assert torch and package, "torch (CPU index) and the package must both be installed"
    assert torch[0][0] == package[0][0] and torch[0][1] < package[0][1], "torch==2.13.0 CPU first, then the package"
    for _, _, r in runs:
        if re.search(r"pip install[^&;]*\btorch\b", r):
            assert "download.pytorch.org/whl/cpu" in r, "every torch install uses the CPU index"
    final = stages[-1]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    last_user = max(i for i, (w, _) in enumerate(final) if w == "USER")
    assert all(i > last_user for i, (w, _) in enumerate(final) if w in ("ENTRYPOINT", "CMD"))
    words = dict(final)
    assert str(DEFAULTS.scorer_web_port) in words["EXPOSE"].split()
    assert "/live" in words["HEALTHCHECK"]
    assert json.loads(words["CMD"]) == ["stream-scorer", "worker"]
    assert words["ENTRYPOINT"]
    for w, rest in final:
        if w == "ENV":
            for key in re.findall(r"(\w+)=", rest):
                assert key in SETTING_ENV or key.startswith(("PYTHON", "PIP", "NUMBA")) or key == "PATH", f"ENV {key}"
    ignored = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if ln.strip() and not ln.startswith("#")]
    for stage in stages:
        for w, rest in stage:
            if w == "COPY" and "--from=" not in rest:
                for src in rest.split()[:-1]:
                    assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                    assert src.rstrip("/") not in ignored, f"COPY {src} is excluded by .dockerignore"
