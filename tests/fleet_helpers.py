"""A real etcd for the fleet tests (Debian's etcd-server): loopback ports, a throwaway data dir.

Without an `etcd` binary the tests are skipped locally, and fail under CI=true (.ci/run
installs it).
"""

import os
import shutil
import socket
import subprocess

import pytest
from conftest import wait_for


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    def __init__(self, tmp_path, port=None):
        binary = shutil.which("etcd")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("etcd is not installed (apt-get install etcd-server); CI must run the fleet tests")
            pytest.skip("etcd is not installed (apt-get install etcd-server)")
        self.data_dir = tmp_path / "etcd-data"
        self.log_path = tmp_path / "etcd.log"
        self.port = port or free_port()
        peer = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--name", "test", "--data-dir", str(self.data_dir),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"test=http://127.0.0.1:{peer}", "--log-level", "warn"],
            stdout=self._log, stderr=self._log)
        wait_for(self._healthy, timeout=30, interval=0.05, message="etcd to answer")

    @property
    def etcd_url(self):
        return f"etcd://127.0.0.1:{self.port}"

    def _healthy(self):
        import urllib.request

        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited with {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return b"true" in resp.read()
        except OSError:
            return False

    def log(self):
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def etcd(tmp_path):
    server = Etcd(tmp_path)
    try:
        yield server
    finally:
        server.stop()
