"""Real Redis topologies for tests, started from the local ``redis-server`` binary on free loopback ports
in a temporary directory: a Cluster of three masters, and a master with a replica watched by Sentinel.

Not fixtures: a test module builds a module-scoped fixture from `start_cluster` / `start_sentinel` and
calls `stop()` after. Every process is started by us and stopped by its own handle.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import stop_process

SERVER = shutil.which("redis-server")
CLI = shutil.which("redis-cli")
MISSING = None if SERVER and CLI else "redis-server and redis-cli are needed to start real Redis topologies"
READY_TIMEOUT_S = 30.0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, *, with_bus: bool = False) -> list[int]:
    """``count`` ports nothing listens on; ``with_bus`` also keeps port + 10000 free (the cluster bus)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in ports or (with_bus and (port > 55535 or not _port_free(port + 10000))):
            continue
        ports.append(port)
    return ports


def wait_until(check: object, what: str, within: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if callable(check) and check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {within} s")
        time.sleep(0.1)


@dataclass
class Server:
    """One redis-server (or sentinel) process we started."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **options: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **options)  # type: ignore[arg-type]

    def kill(self) -> None:
        """As a crash: SIGKILL, no shutdown, no save."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)


def _spawn(root: Path, name: str, args: list[str]) -> Server:
    assert SERVER is not None, MISSING
    workdir = root / name
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SERVER, *args], cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    port = int(args[args.index("--port") + 1])
    return Server(port, proc, log)


def _base_args(port: int, workdir: Path) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


@dataclass
class Topology:
    servers: list[Server] = field(default_factory=list)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@dataclass
class Cluster(Topology):
    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        return f"redis+cluster://{nodes}"


@dataclass
class SentinelSetup(Topology):
    master: Server | None = None
    replica: Server | None = None
    sentinels: list[Server] = field(default_factory=list)
    service: str = "mymaster"

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{self.service}"

    def master_port(self) -> int:
        """The master's port as the first sentinel reports it now."""
        host_port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.service)
        return int(host_port[1])


def start_cluster(root: Path, masters: int = 3) -> Cluster:
    """``masters`` cluster-enabled servers, joined with ``redis-cli --cluster create``; waits for
    ``cluster_state:ok`` on every node."""
    assert CLI is not None, MISSING
    cluster = Cluster()
    try:
        for port in free_ports(masters, with_bus=True):
            workdir = root / f"cluster-{port}"
            workdir.mkdir(parents=True)
            args = [
                *_base_args(port, workdir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
            cluster.servers.append(_spawn(root, f"cluster-{port}", args))
        for server in cluster.servers:
            wait_until(server.client().ping, f"cluster node {server.port}")
        nodes = [f"127.0.0.1:{s.port}" for s in cluster.servers]
        subprocess.run(
            [CLI, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for server in cluster.servers:
            wait_until(
                lambda s=server: s.client().cluster("info")["cluster_state"] == "ok",  # type: ignore[misc]
                f"cluster_state:ok on {server.port}",
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_sentinel(root: Path, sentinels: int = 1, down_after_ms: int = 1000) -> SentinelSetup:
    """A master, one replica of it, and ``sentinels`` Sentinel processes (quorum 1) watching it; waits
    until the replica is in sync and every Sentinel knows it (so a failover can promote it)."""
    setup = SentinelSetup()
    try:
        master_port, replica_port, *sentinel_ports = free_ports(2 + sentinels)
        for name, port, extra in (
            ("master", master_port, []),
            ("replica", replica_port, ["--replicaof", "127.0.0.1", str(master_port)]),
        ):
            workdir = root / name
            workdir.mkdir(parents=True)
            server = _spawn(root, name, _base_args(port, workdir) + extra)
            setup.servers.append(server)
            wait_until(server.client().ping, f"{name} {port}")
        setup.master, setup.replica = setup.servers
        wait_until(
            lambda: (
                setup.replica is not None
                and setup.replica.client().info("replication").get("master_link_status") == "up"
            ),
            "replica in sync",
        )
        for port in sentinel_ports:
            workdir = root / f"sentinel-{port}"
            workdir.mkdir(parents=True)
            conf = workdir / "sentinel.conf"  # Sentinel rewrites its own file: one writable copy each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {setup.service} 127.0.0.1 {master_port} 1\n"
                f"sentinel down-after-milliseconds {setup.service} {down_after_ms}\n"
                f"sentinel failover-timeout {setup.service} 5000\n"
                f"sentinel parallel-syncs {setup.service} 1\n",
                encoding="utf-8",
            )
            sentinel = _spawn(root, f"sentinel-{port}", [str(conf), "--sentinel", "--port", str(port)])
            setup.servers.append(sentinel)
            setup.sentinels.append(sentinel)
        for sentinel in setup.sentinels:
            wait_until(
                lambda s=sentinel: len(s.client().sentinel_slaves(setup.service)) == 1,  # type: ignore[misc]
                f"sentinel {sentinel.port} sees the replica",
            )
    except BaseException:
        setup.stop()
        raise
    return setup


__all__ = [
    "MISSING",
    "Cluster",
    "SentinelSetup",
    "Server",
    "free_ports",
    "start_cluster",
    "start_sentinel",
    "wait_until",
]
