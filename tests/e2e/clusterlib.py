"""Cluster mode harness (CLUSTER.md): a real etcd (Debian's /usr/bin/etcd) on loopback with a temp
data dir and ports the test picks, and snigate nodes on 127.0.1.1, 127.0.1.2, ... each with its own
--node-id and the short test lease (2 s). Fixtures: `etcd` (one member, stopped after the test) and
`cluster` (cluster.node(i) starts node i against that etcd through gateway_factory, so the usual
checks on stop apply: exit 0, no sanitizer report). cluster.node(i, relay=True) also gives the node
a relay port on its address and a certificate naming it (subjectAltName DNS:n<i>) under a cluster CA
made for the test, so visitors reach its tunnels from every other relaying node.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Pki, read_text, tail, wait_for

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
LEASE_TTL = 2  # seconds; the nodes' --cluster-lease-ttl in these tests
KEY_PREFIX = "/snigate/v1/"


def _free_port(host: str = "127.0.0.1") -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Etcd:
    """One etcd member on 127.0.0.1 with fast elections (heartbeat 50 ms, election 500 ms)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.data = directory / "data"
        self.log = directory / "etcd.log"
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> "Etcd":
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [ETCD, "--data-dir", str(self.data), "--name", "default",
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"default={peer}",
                "--heartbeat-interval", "50", "--election-timeout", "500"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"etcd exited {self.proc.returncode}:\n{tail(read_text(self.log))}")
            try:
                self.call("/v3/kv/range", {"key": _b64("x")})
                return True
            except OSError:
                return False

        wait_for(up, 30, "etcd to answer")
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def call(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def keys(self, prefix: str) -> dict[str, dict]:
        """Every key under KEY_PREFIX + prefix now in etcd -> its JSON value."""
        prefix = KEY_PREFIX + prefix
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        out = {}
        for kv in self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)}).get("kvs", []):
            out[base64.b64decode(kv["key"]).decode()] = json.loads(base64.b64decode(kv.get("value", "")))
        return out

    def routes(self) -> dict[str, dict]:
        return self.keys("routes/")

    def holders(self, name: str) -> list[str]:
        """The node ids holding `name` in etcd."""
        return [k.split("/")[-2] for k in self.routes() if k.split("/")[4] == name]


class Cluster:
    def __init__(self, etcd: Etcd, gateway_factory, directory: Path):
        self.etcd = etcd
        self.factory = gateway_factory
        self.dir = directory
        self.nodes = {}
        self.relay_ports = {}
        self._pki: Pki | None = None

    @property
    def pki(self) -> Pki:
        """The cluster CA (made on first use: only relay tests need it)."""
        if self._pki is None:
            d = self.dir / "cluster-pki"
            d.mkdir()
            self._pki = Pki(d)
        return self._pki

    def relay_args(self, i: int, advertise: str | None = None) -> list[str]:
        """--relay-listen on 127.0.1.<i> and node n<i>'s certificate; `advertise`: a different
        --relay-advertise (e.g. a closed port, for an unreachable peer)."""
        port = self.relay_ports.setdefault(i, _free_port(f"127.0.1.{i}"))
        cert, key = self.pki.leaf([f"n{i}"], usage="serverAuth,clientAuth")
        args = ["--relay-listen", f"127.0.1.{i}:{port}", "--cluster-ca", str(self.pki.ca),
                "--cluster-cert", str(cert), "--cluster-key", str(key)]
        return args + (["--relay-advertise", advertise] if advertise else [])

    def node(self, i: int, args=(), relay: bool = False, **kw):
        """Starts node n<i> on 127.0.1.<i> against the test's etcd (with a relay if asked)."""
        extra = self.relay_args(i) if relay else []
        gw = self.factory(host=f"127.0.1.{i}",
                          args=["--cluster-etcd", self.etcd.url, "--node-id", f"n{i}",
                                "--cluster-lease-ttl", str(LEASE_TTL), *extra, *args], **kw)
        self.nodes[i] = gw
        return gw

    def wait_holders(self, name: str, want: list[str], timeout: float):
        wait_for(lambda: sorted(self.etcd.holders(name)) == sorted(want), timeout,
                 f"etcd holders of {name} to be {want} (now {self.etcd.holders(name)})")


@pytest.fixture
def etcd(tmp_path):
    e = Etcd(tmp_path / "etcd")
    e.dir.mkdir()
    e.start()
    yield e
    e.stop()


@pytest.fixture
def cluster(etcd, gateway_factory, tmp_path) -> Cluster:
    return Cluster(etcd, gateway_factory, tmp_path)
