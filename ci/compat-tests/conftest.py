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
        assert BINARY.exists(), f"build the broker first: {BINARY} is missing"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(BINARY), "broker", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
             "--log-level", "info", *self.extra_args],
            stdout=log, stderr=log)
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
