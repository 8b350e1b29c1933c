"""Fixtures for the real-client compatibility suite: a real `gregor broker` process per test
module, on a free loopback port, with its own data dir; restartable to prove durability."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("GREGOR_BIN", ROOT / "target" / "debug" / "gregor"))
STARTUP_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    """One broker process. `restart()` stops it with SIGTERM (or SIGKILL) and starts it again on
    the same port and data dir."""

    def __init__(self, data_dir: Path, extra_args=()):
        self.data_dir = data_dir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.process = None
        self.log_path = data_dir.parent / f"broker-{self.port}.log"

    def start(self):
        self.spawn()
        self.listening_wait()

    def spawn(self):
        assert BINARY.exists(), f"build the broker first: {BINARY} is missing"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "broker", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
             "--log-level", "info", *self.extra_args],
            stdout=log, stderr=log)

    def listening_wait(self):
        """A broker listens once its controller quorum has registered and unfenced it."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"broker did not listen within {STARTUP_TIMEOUT_S}s")

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        self.start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gregor") / "data"
    instance = Broker(data_dir)
    instance.start()
    yield instance
    instance.stop()
    print(instance.log_path.read_text(errors="replace")[-4000:])


class Cluster:
    """`size` gregor processes on loopback forming one cluster (every node broker and
    controller): node i is `nodes[i - 1]`, with its own Kafka port, controller port, data dir
    and rack `r{i}`."""

    def __init__(self, root: Path, size=3, extra_args=()):
        controller_ports = [free_port() for _ in range(size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(controller_ports))
        self.nodes = [
            Broker(root / f"node{i + 1}" / "data",
                   ["--node-id", str(i + 1), "--voters", voters, "--rack", f"r{i + 1}",
                    *extra_args])
            for i in range(size)
        ]
        for node in self.nodes:
            node.data_dir.parent.mkdir(parents=True, exist_ok=True)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    def start(self):
        # Every node waits for its quorum before it listens: start them all, then wait.
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.listening_wait()

    def stop(self):
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- node {i + 1}\n" + node.log_path.read_text(errors="replace")[-3000:]
                         for i, node in enumerate(self.nodes))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    instance = Cluster(tmp_path_factory.mktemp("gregor-cluster"))
    instance.start()
    yield instance
    instance.stop()
    print(instance.logs())
