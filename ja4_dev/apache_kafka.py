"""Apache Kafka 4 (KRaft) on loopback, for the tests, the benchmarks and ``demo --broker kafka``.

Why not the release tarball: the machines reach package registries only, so the broker's jars
come from Maven Central (``org.apache.kafka:kafka_2.13``), resolved once by Maven into a
cache shared by every process (``~/.cache/ja4-stream/kafka-<version>/lib``; a lock file makes
a second process wait for the first instead of resolving beside it). Then each node is a plain
``java -cp 'lib/*' kafka.Kafka server.properties`` in its own process group.

A cluster is 1 or 3 combined broker+controller nodes (a controller quorum of every node), on
free loopback ports chosen once, so a node restarted on its data directory comes back on the
same ports. Test-friendly broker settings live here, not in the tests:
:func:`broker_properties`. Designed for the fault campaign too: per node :meth:`KafkaNode.kill9`,
:meth:`KafkaNode.stop` / :meth:`KafkaNode.start`, and :meth:`KafkaCluster.restart` of all.

No process is left behind: every node dies with the thread that started it
(``PR_SET_PDEATHSIG``), is killed at interpreter exit, and :meth:`KafkaNode.stop` kills the
process group when a clean shutdown does not finish in time.

``python -m ja4_dev.apache_kafka resolve`` fills the cache (CI does it before the tests);
``python -m ja4_dev.apache_kafka run --nodes 3`` runs a cluster until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Iterator, Mapping, Sequence

#: The pinned broker. 4.1 runs on Java 17 (the broker's minimum since 4.0).
KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
#: Kafka's jars log through SLF4J 1.7; this binding sends that to the log4j2 that Kafka
#: already depends on (same version as Kafka 4.1.1's log4j-core), so nodes write a log.
LOG4J_VERSION = "2.24.3"

#: JVM options for a fast start on a small machine: one GC thread, C1 only (a node is ready
#: in ~2 s instead of ~4), class data sharing when the JDK has an archive.
FAST_START_JVM = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")
DEFAULT_HEAP = "512m"

#: Topic configuration that makes compaction observable within seconds (broker side, the
#: cleaner checks every second: ``log.cleaner.backoff.ms`` in :func:`broker_properties`).
FAST_COMPACTION_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "compact", "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000", "min.compaction.lag.ms": "0",
}

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


class KafkaHarnessError(RuntimeError):
    """Base of the harness's errors."""


class KafkaUnavailable(KafkaHarnessError):
    """Java (or, before the jars are cached, Maven) is not installed here."""


class KafkaResolveError(KafkaHarnessError):
    """Maven could not resolve the broker's jars."""


class KafkaStartError(KafkaHarnessError):
    """A node exited, or the cluster was not ready in time (the message names the log)."""


# --- tools and the jar cache -----------------------------------------------------------------

def cache_root() -> Path:
    """Where resolved brokers are kept: ``JA4_KAFKA_CACHE``, else the user's cache directory."""
    explicit = os.environ.get("JA4_KAFKA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ja4-stream"


def lib_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}" / "lib"


def _resolved(version: str) -> bool:
    return (lib_dir(version).parent / "COMPLETE").exists()


def missing_tools(version: str = KAFKA_VERSION) -> list[str]:
    """What this machine lacks to run Apache Kafka: ``java``, and ``mvn`` until resolved."""
    missing = [] if shutil.which("java") else ["java"]
    if not _resolved(version) and not shutil.which("mvn"):
        missing.append("mvn")
    return missing


def available(version: str = KAFKA_VERSION) -> bool:
    """True when :class:`KafkaCluster` can run here (it may still need to resolve the jars)."""
    return not missing_tools(version)


def _pom(version: str) -> str:
    dep = "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>"
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ja4-stream.dev</groupId><artifactId>apache-kafka-runtime</artifactId><version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    {dep.format("org.apache.kafka", f"kafka_{SCALA_VERSION}", version)}
    {dep.format("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)}
  </dependencies>
</project>
"""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, also if we die
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """The directory of the broker's jars, resolved from Maven Central on first use.

    Concurrent callers (two pytest sessions, the demo) serialise on a lock file; the jars are
    copied to a temporary directory and renamed into place, so a half-resolved cache is never
    used.
    """
    target = lib_dir(version)
    if _resolved(version):
        return target
    if not shutil.which("mvn"):
        raise KafkaUnavailable("Apache Kafka needs Maven (mvn) to resolve its jars the first time")
    home = target.parent
    with _locked(home.parent / f"kafka-{version}.lock"):
        if _resolved(version):
            return target
        home.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="resolve-", dir=home))
        try:
            (work / "pom.xml").write_text(_pom(version))
            cmd = ["mvn", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                   "-DincludeScope=runtime", f"-DoutputDirectory={work / 'lib'}"]
            if quiet:
                cmd.insert(1, "-q")
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if out.returncode != 0 or not list((work / "lib").glob(f"kafka_{SCALA_VERSION}-{version}.jar")):
                raise KafkaResolveError(f"mvn could not resolve org.apache.kafka:kafka_{SCALA_VERSION}:{version} "
                                        f"(exit {out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
            if target.exists():
                shutil.rmtree(target)
            (work / "lib").rename(target)
            (home / "COMPLETE").write_text(f"kafka_{SCALA_VERSION}-{version}\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


# --- configuration -----------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open until chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _kafka_uuid() -> str:
    """A Kafka ``Uuid`` string (URL-safe base64 of 16 bytes, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def broker_properties(node_id: int, port: int, controller_ports: Mapping[int, int], data_dir: Path, *,
                      min_insync_replicas: int | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``server.properties`` of one combined broker+controller node of a loopback cluster.

    Internal topics (offsets, transactions, share groups) are replicated to every node up to
    3; ``min.insync.replicas`` defaults to 1 because the product's clients may create RF=1
    topics; the fault campaign passes 2 for its RF=3 topics. Group joins skip the initial
    delay and accept short session timeouts; the log cleaner checks every second.
    """
    n = len(controller_ports)
    rf = min(3, n)
    internal_isr = min(2, rf)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_ports[node_id]}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.quorum.bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in controller_ports.values()),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_insync_replicas or 1),
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(internal_isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(internal_isr),
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "log.cleaner.backoff.ms": "1000",
        "log.retention.check.interval.ms": "10000",
        # A 2-core machine: fewer threads than the defaults sized for servers.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.replica.fetchers": "1",
        "log.cleaner.threads": "1",
        "num.recovery.threads.per.data.dir": "1",
    }
    props.update(extra or {})
    return props


LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
"""


# --- processes -----------------------------------------------------------------------------------

_live: "weakref.WeakSet[KafkaNode]" = weakref.WeakSet()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the thread that started it ends."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_all() -> None:
    for node in list(_live):
        node.kill9()


def _track(node: "KafkaNode") -> None:
    """Remember a running node, to kill it at interpreter exit (registered on first use)."""
    if not _live:
        atexit.unregister(_kill_all)
        atexit.register(_kill_all)
    _live.add(node)


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


class KafkaNode:
    """One combined broker+controller JVM with its own data directory and ports."""

    def __init__(self, cluster: "KafkaCluster", node_id: int, port: int, controller_port: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.port = port
        self.controller_port = controller_port
        self.dir = cluster.workdir / f"node-{node_id}"
        self.data_dir = self.dir / "data"
        self.properties_path = self.dir / "server.properties"
        self.log_path = self.dir / "server.log"
        self.directory_id = _kafka_uuid()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc else None

    def _java(self, heap: str) -> list[str]:
        c = self.cluster
        return ["java", f"-Xmx{heap}", *c.jvm_options, "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={c.workdir / 'log4j2.properties'}", "-cp", f"{c.lib}/*"]

    def format(self) -> None:
        """Format the data directory once (a restart reuses it as it is)."""
        if (self.data_dir / "meta.properties").exists():
            return
        c = self.cluster
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}:{n.directory_id}" for n in c.nodes)
        out = subprocess.run([*self._java("256m"), STORAGE_TOOL, "format", "--cluster-id", c.cluster_id,
                              "--config", str(self.properties_path), "--initial-controllers", voters],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise KafkaStartError(f"formatting node {self.node_id} failed (exit {out.returncode}):\n"
                                  f"{(out.stdout + out.stderr)[-3000:]}")

    def start(self) -> "KafkaNode":
        """Start the JVM (not waiting: :meth:`KafkaCluster.wait_ready` does)."""
        if self.running:
            return self
        self.format()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [*self._java(self.cluster.heap), MAIN_CLASS, str(self.properties_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                start_new_session=True, preexec_fn=_die_with_parent if self.cluster.die_with_parent else None)
        finally:
            log.close()
        _track(self)
        return self

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the node's process group (a crash: no clean shutdown, nothing flushed)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL)
        self.proc.wait()
        _live.discard(self)

    def terminate(self) -> None:
        """Ask for a clean shutdown without waiting (see :meth:`wait_stopped`)."""
        if self.running:
            self._signal(signal.SIGTERM)

    def wait_stopped(self, grace: float = 30.0) -> int | None:
        """Wait for the JVM to exit; kill it once ``grace`` seconds have passed."""
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill9()
            rc = self.proc.returncode
        _live.discard(self)
        return rc

    def stop(self, grace: float = 30.0) -> int | None:
        """Clean shutdown (SIGTERM), killed after ``grace`` seconds."""
        self.terminate()
        return self.wait_stopped(grace)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


class KafkaCluster:
    """``nodes`` (1 or 3) combined broker+controller nodes on loopback.

    >>> with KafkaCluster(nodes=1) as kafka:     # doctest: +SKIP
    ...     produce(kafka.bootstrap, ...)
    """

    def __init__(self, nodes: int = 1, *, workdir: Path | None = None, version: str = KAFKA_VERSION,
                 heap: str = DEFAULT_HEAP, jvm_options: Sequence[str] = FAST_START_JVM,
                 min_insync_replicas: int | None = None, broker_config: Mapping[str, str] | None = None,
                 die_with_parent: bool = True) -> None:
        if nodes < 1:
            raise ValueError(f"nodes: must be at least 1, got {nodes}")
        self.version = version
        self.heap = heap
        self.jvm_options = tuple(jvm_options)
        self.die_with_parent = die_with_parent
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="ja4-kafka-"))
        self.cluster_id = _kafka_uuid()
        ports = _free_ports(2 * nodes)
        self.nodes = [KafkaNode(self, i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(nodes)]
        self.min_insync_replicas = min_insync_replicas
        self.broker_config = dict(broker_config or {})
        self.lib: Path | None = None
        #: Seconds from spawning the JVMs to ready, for each start of the whole cluster.
        self.ready_seconds: list[float] = []

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def _prepare(self) -> None:
        if self.lib is not None:
            return
        missing = missing_tools(self.version)
        if missing:
            raise KafkaUnavailable(f"Apache Kafka needs {' and '.join(missing)} on PATH")
        self.lib = resolve(self.version)
        (self.workdir / "log4j2.properties").parent.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        controllers = {n.node_id: n.controller_port for n in self.nodes}
        for n in self.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            _write_properties(n.properties_path, broker_properties(
                n.node_id, n.port, controllers, n.data_dir, min_insync_replicas=self.min_insync_replicas,
                extra=self.broker_config))

    def start(self, timeout: float = 120.0) -> "KafkaCluster":
        """Resolve (first time), format (first time), start every node and wait until ready."""
        self._prepare()
        for n in self.nodes:
            n.format()
        t0 = time.monotonic()
        for n in self.nodes:
            n.start()
        try:
            self.wait_ready(timeout=timeout)
        except BaseException:
            self.stop(grace=5)
            raise
        self.ready_seconds.append(time.monotonic() - t0)
        return self

    def running_nodes(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.running]

    def wait_ready(self, timeout: float = 120.0, nodes: Sequence[KafkaNode] | None = None) -> None:
        """Wait until every running node (or ``nodes``) is a live broker in the metadata and a
        replicated probe topic has a leader for each partition (the controller quorum works)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        want = list(nodes) if nodes is not None else self.running_nodes()
        deadline = time.monotonic() + timeout
        for n in want:  # the TCP listener first: the admin client would log refused connections
            while not _listening(n.port):
                self._check_alive(want)
                if time.monotonic() > deadline:
                    raise KafkaStartError(f"node {n.node_id} did not listen within {timeout}s:\n{n.log_tail()}")
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in want), "log_level": 3})
        probe, rf, created = "__ja4_ready", min(3, len(want)), False
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive(want)
            try:
                meta = admin.list_topics(timeout=5)
                brokers = set(meta.brokers)
                if {n.node_id for n in want} <= brokers:
                    if not created and probe not in meta.topics:
                        fut = admin.create_topics([NewTopic(probe, 1, rf)], operation_timeout=10)[probe]
                        with contextlib.suppress(KafkaException):
                            fut.result(15)
                    created = True
                    topic = meta.topics.get(probe)
                    if topic is not None and topic.error is None and topic.partitions and \
                            all(p.leader in brokers for p in topic.partitions.values()):
                        return
                last = sorted(brokers)
            except KafkaException as exc:
                last = exc
            time.sleep(0.2)
        raise KafkaStartError(f"cluster not ready within {timeout}s (brokers seen: {last}); logs under "
                              f"{self.workdir}:\n{want[0].log_tail()}")

    def _check_alive(self, nodes: Sequence[KafkaNode]) -> None:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is not None:
                raise KafkaStartError(f"node {n.node_id} exited with {n.proc.returncode} "
                                      f"(log {n.log_path}):\n{n.log_tail()}")

    def active_controller(self) -> int:
        """The node id of the active KRaft controller (the quorum leader).

        Why not the admin API: in KRaft mode a broker answers Metadata / DescribeCluster with a
        random live broker as "controller" (clients cannot reach the quorum), and librdkafka
        has no DescribeQuorum. Each voter writes the leader it knows, with its epoch, to
        ``__cluster_metadata-0/quorum-state``; the highest epoch among running nodes wins.
        """
        import json

        best: tuple[int, int] | None = None
        for n in self.running_nodes():
            path = n.data_dir / "__cluster_metadata-0" / "quorum-state"
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
            if leader >= 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        if best is None:
            raise KafkaHarnessError("no running node knows the controller quorum's leader yet")
        return best[0]

    def wait_controller_other_than(self, node_id: int, timeout: float = 30.0) -> int:
        """Wait until the running nodes agree on a quorum leader other than ``node_id`` (after
        that node was killed) and return it. During the election no running node knows a
        leader, which is a state to wait through, not an error."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                leader = self.active_controller()
                if leader != node_id:
                    return leader
            except KafkaHarnessError:
                pass
            if time.monotonic() >= deadline:
                raise KafkaHarnessError(f"no controller other than node {node_id} elected within {timeout}s")
            time.sleep(0.2)

    def wait_in_sync(self, timeout: float = 60.0) -> None:
        """Wait until every partition of every topic has all its replicas in sync (after a node
        came back: the next fault must not find a partition already short of its ISR)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in self.running_nodes()),
                             "log_level": 3})
        deadline = time.monotonic() + timeout
        short: list[str] = []
        while time.monotonic() < deadline:
            try:
                meta = admin.list_topics(timeout=5)
                short = [f"{t}[{p}]" for t, tm in meta.topics.items() for p, pm in tm.partitions.items()
                         if set(pm.isrs) != set(pm.replicas) or pm.leader < 0]
                if not short:
                    return
            except KafkaException as exc:
                short = [str(exc)]
            time.sleep(0.3)
        raise KafkaStartError(f"partitions not in sync within {timeout}s: {short[:10]}")

    def stop(self, grace: float = 30.0) -> None:
        """Clean shutdown of every node at once; any still running after ``grace`` is killed."""
        for n in self.nodes:
            n.terminate()
        deadline = time.monotonic() + grace
        for n in self.nodes:
            n.wait_stopped(max(0.1, deadline - time.monotonic()))

    def restart(self, timeout: float = 120.0, grace: float = 30.0) -> "KafkaCluster":
        """Stop every node, then start them all on the same data directories and ports."""
        self.stop(grace)
        t0 = time.monotonic()
        for n in self.nodes:
            n.start()
        self.wait_ready(timeout)
        self.ready_seconds.append(time.monotonic() - t0)
        return self

    def close(self) -> None:
        """Stop, and delete the working directory if the cluster made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- command line ------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ja4_dev.apache_kafka", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("resolve", help="resolve the broker's jars into the cache (and time a start)")
    p.add_argument("--check-start", action="store_true", help="also start and stop one node")
    p = sub.add_parser("run", help="run a cluster until Ctrl-C")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "resolve":
            t0 = time.monotonic()
            path = resolve(KAFKA_VERSION)
            print(f"Apache Kafka {KAFKA_VERSION}: {len(list(path.glob('*.jar')))} jars in {path} "
                  f"({time.monotonic() - t0:.1f}s)", flush=True)
            if args.check_start:
                with KafkaCluster(1) as kafka:
                    print(f"one node ready in {kafka.ready_seconds[0]:.1f}s on {kafka.bootstrap}", flush=True)
            return 0
        cluster = KafkaCluster(args.nodes, workdir=args.workdir).start()
        print(f"ready in {cluster.ready_seconds[0]:.1f}s: KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap}", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        cluster.close()
        return 0
    except KafkaHarnessError as exc:
        print(f"apache-kafka: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
