"""End-to-end harness for snigate: the real build/snigate, the real OpenSSH client, real TLS.

What is here (tests import the helpers with `from conftest import ...`):
  Pki       a throw-away CA and leaf certificates, made once per pytest session with the openssl CLI
  SshKeys   user keys made with ssh-keygen (alice, bob, carol, mallory)
  Gateway   `snigate serve` on 127.0.0.1 port 0; waits for `serve.ready`, pins the host key, and on
            stop expects exit 0 and no sanitizer report in its log. admin_listen="127.0.0.1:0" turns
            the admin API on (port from `admin=` in serve.ready; Gateway.admin() sends a request);
            env= adds environment variables (e.g. SNIGATE_ADMIN_TOKEN)
  http_request (plain HTTP/1.1 to 127.0.0.1), read_events (the --event-log JSON lines),
            parse_prometheus and metric (/metrics, strictly parsed)
  Upstream  a TLS server in Python (threads) with scripted behaviours: http, echo, half-close
  Tunnel    `ssh -R NAME:443:127.0.0.1:UP ... tls` (or -N); ready when the banner shows every URL
  TLS helpers: https_get (Python ssl, verification on), curl_get, s_client_get, client_hello(),
            reframe(), raw_exchange(), MemTls (ssl.SSLObject over a raw socket, to control framing,
            pacing and half-close, and to record the ciphertext as it crossed the wire)

What it deliberately doesn't do: sleep to wait for something (it polls, always bounded in count and
time), use fixed ports, or listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO = Path(os.environ.get("SNIGATE_SOURCE_DIR") or Path(__file__).resolve().parents[2])
SNIGATE_BIN = os.environ.get("SNIGATE_BIN") or str(REPO / "build" / "snigate")
SSH = shutil.which("ssh") or "/usr/bin/ssh"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
CURL = shutil.which("curl") or "/usr/bin/curl"

# Bounds for "wait until" loops. They return as soon as the condition holds, so they can be
# generous (sanitizer builds on 2 busy cores are slow); semantic timings are asserted separately.
START_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# TLS alert descriptions (RFC 8446 section 6).
ALERT_RECORD_OVERFLOW = 22
ALERT_DECODE_ERROR = 50
ALERT_INTERNAL_ERROR = 80
ALERT_UNRECOGNIZED_NAME = 112

# Names the test upstreams' certificate covers. OpenSSL refuses "*.localhost" as a wildcard (too
# few labels), so generated names under localhost get their own certificate via Upstream.add_names.
UPSTREAM_NAMES = (
    "app.alice.test",
    "*.alice.test",
    "deep.x.alice.test",
    "*.x.alice.test",
    "app.bob.test",
    "*.bob.test",
    "demo.localhost",
)

BANNER_RE = re.compile(r"Forwarding (tls://[A-Za-z0-9.*:\-\[\]]+)")
READY_RE = re.compile(r"serve\.ready ssh=127\.0\.[01]\.\d+:(\d+) tls=127\.0\.[01]\.\d+:(\d+)")
READY_ADMIN_RE = re.compile(r"serve\.ready [^\n]*\badmin=127\.0\.0\.1:(\d+)")


# ----------------------------------------------------------------------------------------------
# small utilities


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Polls cond() until it returns something truthy; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def run(cmd: list[str], timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(
            f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}"
        )
    return p


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


def free_closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound then closed: connecting gets a refusal)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def clean_env() -> dict[str, str]:
    """Environment for clients: no proxies, no agent, and no SNIGATE_* settings leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k != "SSH_AUTH_SOCK"
           and not (k.startswith("SNIGATE_") and k not in ("SNIGATE_BIN", "SNIGATE_SOURCE_DIR"))}
    return env


# ----------------------------------------------------------------------------------------------
# certificates and keys


class Pki:
    """A test CA plus leaf certificates for given DNS names, made with the openssl CLI."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca_key = directory / "ca.key"
        self.ca = directory / "ca.pem"
        self._leaves: dict[tuple[tuple[str, ...], str], tuple[Path, Path]] = {}
        self._lock = threading.Lock()
        run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca), "-days", "3",
             "-subj", "/CN=snigate e2e test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])

    def leaf(self, names: Iterable[str], usage: str = "serverAuth") -> tuple[Path, Path]:
        """(cert, key) for a certificate whose SANs are exactly `names` (cached); `usage`: its
        extendedKeyUsage (the cluster relay's node certificates are "serverAuth,clientAuth")."""
        key = tuple(sorted(set(names)))
        with self._lock:
            if (key, usage) in self._leaves:
                return self._leaves[(key, usage)]
            base = self.dir / f"leaf{len(self._leaves)}"
            ext = base.with_suffix(".ext")
            ext.write_text(
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\n"
                "subjectAltName=" + ",".join(f"DNS:{n}" for n in key) + "\n")
            run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", str(base.with_suffix(".key")), "-out",
                 str(base.with_suffix(".csr")), "-subj", f"/CN={key[0]}"])
            run([OPENSSL, "x509", "-req", "-in", str(base.with_suffix(".csr")), "-CA", str(self.ca),
                 "-CAkey", str(self.ca_key), "-set_serial", str(random.getrandbits(62)), "-days", "3",
                 "-extfile", str(ext), "-out", str(base.with_suffix(".pem"))])
            self._leaves[(key, usage)] = (base.with_suffix(".pem"), base.with_suffix(".key"))
            return self._leaves[(key, usage)]

    def client_context(self) -> ssl.SSLContext:
        """Verifying client context: our CA only, hostname checked."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self, names: Iterable[str]) -> ssl.SSLContext:
        cert, key = self.leaf(names)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        return ctx


class SshKeys:
    """Ed25519 user keys made with ssh-keygen, one per name, cached for the session."""

    def __init__(self, directory: Path):
        self.dir = directory
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        with self._lock:
            p = self.dir / f"id_{name}"
            if not p.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(p)])
            return p

    def pub(self, name: str) -> str:
        """The public key line: `ssh-ed25519 AAAA... name`."""
        return Path(str(self.path(name)) + ".pub").read_text().strip()


def default_authorized_keys(keys: SshKeys) -> str:
    # alice and bob may bind their own wildcard zones; carol has no permitlisten, so only names
    # under --domain (localhost) and generated ones; mallory is not listed at all.
    return (
        "# snigate e2e authorized_keys\n"
        f'permitlisten="*.alice.test:443" {keys.pub("alice")}\n'
        f'permitlisten="*.bob.test:443" {keys.pub("bob")}\n'
        f"{keys.pub('carol')}\n"
    )


# ----------------------------------------------------------------------------------------------
# the gateway


class Gateway:
    """`snigate serve` on 127.0.0.1 with port 0 listeners, in its own temp dir."""

    def __init__(self, directory: Path, keys: SshKeys, authorized_keys: str | None = "default",
                 args: Iterable[str] = (), state_dir: Path | None = None,
                 admin_listen: str = "off", env: dict[str, str] | None = None,
                 host: str = "127.0.0.1"):
        self.dir = directory
        self.host = host  # the address it listens on (cluster tests: 127.0.1.x, one per node)
        self.keys = keys
        self.state_dir = state_dir or directory / "state"
        self.authorized_keys = directory / "authorized_keys"
        self.log = directory / "gateway.log"
        self.out = directory / "gateway.stdout"
        self.known_hosts = directory / "known_hosts"
        self.extra_args = list(args)
        self.admin_listen = admin_listen
        self.env = dict(env or {})  # extra environment for snigate (e.g. SNIGATE_ADMIN_TOKEN)
        self.proc: subprocess.Popen | None = None
        self.ssh_port = 0
        self.tls_port = 0
        self.admin_port = 0  # set from `admin=` in serve.ready when the admin API listens
        self.tunnels: list[Tunnel] = []
        self.stopped_rc: int | None = None
        if authorized_keys == "default":
            authorized_keys = default_authorized_keys(keys)
        if authorized_keys is not None:
            self.authorized_keys.write_text(authorized_keys)

    def command(self) -> list[str]:
        return [SNIGATE_BIN, "serve",
                "--ssh-listen", f"{self.host}:0",
                "--tls-listen", f"{self.host}:0",
                "--admin-listen", self.admin_listen,
                "--state-dir", str(self.state_dir),
                "--authorized-keys", str(self.authorized_keys),
                "--domain", "localhost",
                "--log-level", "debug",
                *self.extra_args]

    def start(self) -> "Gateway":
        with open(self.log, "wb") as err, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=self.dir, env={**clean_env(), **self.env},
                                         start_new_session=True)

        def ready():
            m = READY_RE.search(self.log_text())
            if m:
                return m
            if self.proc.poll() is not None:
                pytest.fail(f"snigate exited with {self.proc.returncode} before serve.ready:\n"
                            f"{tail(self.log_text())}")
            return None

        m = wait_for(ready, START_TIMEOUT, "snigate's serve.ready log line")
        self.ssh_port, self.tls_port = int(m.group(1)), int(m.group(2))
        a = READY_ADMIN_RE.search(self.log_text())
        self.admin_port = int(a.group(1)) if a else 0
        self._pin_host_key()
        return self

    def _pin_host_key(self):
        pub = self.state_dir / "ssh_host_ed25519_key.pub"
        assert pub.exists(), f"host key {pub} not written (DESIGN 3: OpenSSH format in STATE_DIR)"
        fields = pub.read_text().split()
        assert len(fields) >= 2 and fields[0] == "ssh-ed25519", f"odd host key file: {fields[:2]}"
        self.known_hosts.write_text(f"[{self.host}]:{self.ssh_port} {fields[0]} {fields[1]}\n")

    def log_text(self) -> str:
        return read_text(self.log) + read_text(self.out)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, then wait (bounded). Returns the exit status; SIGKILLs if it does not exit."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                self.stopped_rc = None
                return -999
        self.stopped_rc = self.proc.returncode
        return self.stopped_rc

    def sanitizer_report(self) -> str | None:
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            i = text.find(marker)
            if i >= 0:
                return text[max(0, i - 2000): i + 6000]
        return None

    # ---- routing probes

    def probe(self, name: str, timeout: float = 5.0) -> bytes:
        """Sends a real ClientHello for `name`; returns the first bytes of the answer (b'' = closed)."""
        return raw_exchange(self.tls_port, [client_hello(name)], read_timeout=timeout,
                            max_bytes=7, stop_after=7, host=self.host).data

    def routed(self, name: str) -> bool:
        """True once a ClientHello for `name` gets a ServerHello (a handshake record) back."""
        answer = self.probe(name)
        return len(answer) >= 1 and answer[0] == 0x16

    def wait_routed(self, name: str, timeout: float = READY_TIMEOUT):
        wait_for(lambda: self.routed(name), timeout, f"{name} to be routed")

    def wait_unrouted(self, name: str, timeout: float) -> float:
        """Waits until `name` answers unrecognized_name; returns the seconds it took."""
        t0 = time.monotonic()
        wait_for(lambda: is_alert(self.probe(name), ALERT_UNRECOGNIZED_NAME), timeout,
                 f"{name} to answer unrecognized_name")
        return time.monotonic() - t0

    # ---- admin API

    def admin(self, method: str, path: str, token: str | None = None, **kw) -> "HttpReply":
        """One request to the admin API (needs admin_listen="127.0.0.1:0")."""
        assert self.admin_port, "the admin API is not listening (admin_listen=...)"
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return http_request(self.admin_port, method, path, headers=headers, **kw)

    def tunnel(self, forwards: Iterable[str], **kw) -> "Tunnel":
        t = Tunnel(self, list(forwards), **kw)
        self.tunnels.append(t)
        return t


@dataclasses.dataclass
class HttpReply:
    status: int
    headers: dict  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_request(port: int, method: str, path: str, headers: dict | None = None,
                 body: bytes | None = None, timeout: float = 10.0) -> HttpReply:
    """A plain HTTP/1.1 request to 127.0.0.1:port (one connection per request)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return HttpReply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        c.close()


def read_events(path: Path) -> list[dict]:
    """The event log's JSON lines (a torn last line, still being written, is left out)."""
    out = []
    for line in read_text(path).splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            out.append(json.loads(line))
    return out


# ----------------------------------------------------------------------------------------------
# Prometheus text format (the admin API's /metrics)


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text: str) -> dict:
    """Parses Prometheus text format 0.0.4 strictly enough for a test. Returns
    {(name, ((label, value), ...)): float}. Fails on: a malformed line, a sample before its family's
    TYPE, a duplicated HELP/TYPE/sample, histogram buckets out of order or not cumulative, +Inf
    bucket != _count, a metric without the snigate_ prefix."""
    assert text.endswith("\n"), "exposition must end with a newline"
    types: dict[str, str] = {}
    helps: set[str] = set()
    seen_samples: set[str] = set()
    samples: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                assert len(parts) >= 3, f"line {n}: {line!r}"
                fam = parts[2]
                assert fam not in seen_samples, f"line {n}: {parts[1]} after samples of {fam}"
                if parts[1] == "TYPE":
                    assert fam not in types, f"line {n}: second TYPE for {fam}"
                    assert len(parts) == 4 and parts[3] in (
                        "counter", "gauge", "histogram", "summary", "untyped"), f"line {n}: {line!r}"
                    types[fam] = parts[3]
                else:
                    assert fam not in helps, f"line {n}: second HELP for {fam}"
                    helps.add(fam)
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"line {n} is not `name{{labels}} value`: {line!r}"
        name, _, raw_labels, raw_value = m.group(1), m.group(2), m.group(3), m.group(4)
        assert name.startswith("snigate_"), f"line {n}: {name} lacks the snigate_ prefix"
        labels = []
        if raw_labels:
            pos = 0
            while pos < len(raw_labels):
                lm = LABEL_RE.match(raw_labels, pos)
                assert lm, f"line {n}: bad labels {raw_labels!r}"
                labels.append((lm.group(1), lm.group(2)))
                pos = lm.end()
        value = float(raw_value)  # accepts NaN, +Inf, -Inf too
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
                fam = name[:-len(suffix)]
        assert fam in types, f"line {n}: sample {name} before (or without) its # TYPE"
        if types[fam] == "counter":
            assert value >= 0 and not math.isnan(value), f"line {n}: counter {name} = {value}"
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"line {n}: duplicate sample {key}"
        samples[key] = value
        seen_samples.add(fam)
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        groups: dict = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                le = dict(labels)["le"]
                rest = tuple(kv for kv in labels if kv[0] != "le")
                groups.setdefault(rest, []).append((float(le), v))
        assert groups, f"histogram {fam} has no buckets"
        for rest, buckets in groups.items():
            les = [le for le, _ in buckets]
            assert les == sorted(les) and les[-1] == math.inf, f"{fam}: buckets {les}"
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{fam}: bucket counts not cumulative: {counts}"
            assert samples.get((fam + "_count", rest)) == counts[-1], f"{fam}: +Inf != _count"
            assert (fam + "_sum", rest) in samples, f"{fam}: no _sum"
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ----------------------------------------------------------------------------------------------
# the user's side: ssh -R


def fwd(name: str, upstream: "Upstream | int", remote_port: int = 443) -> str:
    """An -R argument: NAME:443:127.0.0.1:UPPORT (NAME '' gives `-R 443:...`)."""
    port = upstream if isinstance(upstream, int) else upstream.port
    return f"{name}:{remote_port}:127.0.0.1:{port}" if name else f"{remote_port}:127.0.0.1:{port}"


class Tunnel:
    """The real OpenSSH client: `ssh -R ... 127.0.0.1 tls ...`, stdout/stderr/-E log to files.
    command None: `-N`; "": no command (a shell request)."""

    _seq = 0

    def __init__(self, gateway: Gateway, forwards: list[str], key: str = "alice",
                 command: str | None = "tls", exit_on_forward_failure: bool = True,
                 user: str = "anyuser", extra: Iterable[str] = ()):
        Tunnel._seq += 1
        self.gw = gateway
        self.forwards = forwards
        self.key = key
        self.command = command
        base = gateway.dir / f"ssh{Tunnel._seq}"
        self.stdout_path = base.with_suffix(".stdout")
        self.stderr_path = base.with_suffix(".stderr")
        self.log_path = base.with_suffix(".log")
        args = [SSH, "-F", "/dev/null", "-vvv", "-E", str(self.log_path),
                "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={gateway.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes",
                "-o", f"ExitOnForwardFailure={'yes' if exit_on_forward_failure else 'no'}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                "-o", "ConnectTimeout=20",
                "-i", str(gateway.keys.path(key)), "-p", str(gateway.ssh_port)]
        for f in forwards:
            args += ["-R", f]
        args += list(extra)
        if command is None:
            args.append("-N")
        args.append(f"{user}@{gateway.host}")
        if command:  # "" = no command at all: OpenSSH sends a shell request
            args.append(command)
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Tunnel":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # stdin stays an open pipe (like a user's terminal): EOF on it is not a request to leave.
            self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                         env=clean_env(), start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    # ---- output
    def stdout(self) -> str:
        return read_text(self.stdout_path)

    def stderr(self) -> str:
        return read_text(self.stderr_path)

    def log(self) -> str:
        return read_text(self.log_path)

    def all_output(self) -> str:
        return self.stdout() + self.stderr() + self.log()

    def urls(self) -> list[str]:
        return BANNER_RE.findall(self.stdout() + self.stderr())

    def describe(self) -> str:
        return (f"ssh {' '.join(self.args[1:])}\n-- stdout:\n{tail(self.stdout(), 30)}\n"
                f"-- stderr:\n{tail(self.stderr(), 30)}\n-- ssh -vvv log (tail):\n{tail(self.log(), 40)}")

    # ---- lifecycle
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT, expect_urls: int | None = None):
        """Command sessions: the banner names every forward. -N sessions: each name is routed."""
        if self.command is None:
            for f in self.forwards:
                name = f.split(":")[0] if f.count(":") == 3 else ""
                if name and "*" not in name and name != "localhost":
                    self.gw.wait_routed(name, timeout)
            return
        want = len(self.forwards) if expect_urls is None else expect_urls

        def banner():
            if len(self.urls()) >= want:
                return True
            if not self.running():
                pytest.fail(f"ssh exited {self.proc.returncode} before the banner:\n"
                            f"{self.describe()}\n-- gateway log:\n{tail(self.gw.log_text(), 40)}")
            return False

        wait_for(banner, timeout, f"the banner of {want} tls:// URL(s)")

    def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ssh still running after {timeout}s:\n{self.describe()}")

    def run_to_exit(self, timeout: float = READY_TIMEOUT) -> int:
        self.start(wait=False)
        return self.wait_exit(timeout)

    def kill(self, sig: int = signal.SIGKILL):
        if self.running():
            os.killpg(self.proc.pid, sig)

    def close(self):
        if self.proc is None:
            return
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.running():
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)


# ----------------------------------------------------------------------------------------------
# TLS on the wire


def alert_record(description: int) -> bytes:
    """A fatal TLS alert record: type 21, TLS 1.2 record version, length 2, level fatal(2)."""
    return bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description])


def is_alert(data: bytes, description: int) -> bool:
    """A fatal alert record with this description (record version 3.1 or 3.3 both accepted)."""
    return (len(data) == 7 and data[0] == 0x15 and data[1] == 0x03 and data[2] in (0x01, 0x03)
            and data[3:6] == b"\x00\x02\x02" and data[6] == description)


def client_hello(server_name: str | None, ctx: ssl.SSLContext | None = None) -> bytes:
    """A real ClientHello (one TLS record, as OpenSSL frames it). server_name None: no SNI."""
    if ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def split_records(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parses TLS records: [(type, version, payload)]. Data must be whole records."""
    out, pos = [], 0
    while pos < len(data):
        assert pos + 5 <= len(data), "truncated record header"
        ctype, version, length = struct.unpack("!BHH", data[pos:pos + 5])
        assert pos + 5 + length <= len(data), "truncated record"
        out.append((ctype, version, data[pos + 5:pos + 5 + length]))
        pos += 5 + length
    return out


def reframe(first_flight: bytes, fragment: int) -> bytes:
    """Re-frames a handshake flight so each TLS record carries at most `fragment` payload bytes."""
    out = bytearray()
    for ctype, version, payload in split_records(first_flight):
        for i in range(0, len(payload), fragment):
            chunk = payload[i:i + fragment]
            out += struct.pack("!BHH", ctype, version, len(chunk)) + chunk
    return bytes(out)


@dataclasses.dataclass
class RawResult:
    data: bytes
    closed: bool       # the peer closed (FIN or RST) within the time allowed
    reset: bool        # ... with an RST
    elapsed: float     # seconds from the last byte sent until closed (or the read timeout)


def raw_exchange(port: int, chunks: Iterable[bytes], read_timeout: float = 5.0, pause: float = 0.0,
                 max_bytes: int = 1 << 20, stop_after: int | None = None,
                 host: str = "127.0.0.1") -> RawResult:
    """Connects to host:port, sends each chunk (pausing between them), then reads until the
    peer closes, `stop_after` bytes arrived, or `read_timeout` passes."""
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytearray()
    closed = reset = False
    try:
        first = True
        for c in chunks:
            if pause and not first:
                time.sleep(pause)
            first = False
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                closed = reset = True
                break
        t0 = time.monotonic()
        deadline = t0 + read_timeout
        while not closed and len(data) < max_bytes:
            if stop_after is not None and len(data) >= stop_after:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = reset = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        return RawResult(bytes(data), closed, reset, time.monotonic() - t0)
    finally:
        s.close()


class MemTls:
    """TLS over a raw socket through ssl.SSLObject and memory BIOs, so a test decides how bytes are
    framed and paced, can half-close (close_notify, then TCP FIN) and can see TCP EOF separately
    from close_notify. Records the ciphertext sent and received, to compare both ends byte for byte."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_side: bool = False,
                 server_hostname: str | None = None, timeout: float = 30.0):
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)
        self.deadline = time.monotonic() + timeout
        self.raw_in = bytearray()
        self.raw_out = bytearray()
        self.tcp_eof = False       # the peer's FIN arrived
        self.close_notify = False  # the peer's close_notify arrived

    @classmethod
    def connect(cls, port: int, ctx: ssl.SSLContext, server_hostname: str | None,
                timeout: float = 30.0) -> "MemTls":
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        return cls(s, ctx, server_hostname=server_hostname, timeout=timeout)

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("MemTls: deadline passed")
        return left

    def send_raw(self, data: bytes):
        self.sock.settimeout(self._left())
        self.sock.sendall(data)
        self.raw_out += data

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.send_raw(data)

    def recv_raw(self) -> bool:
        """Reads once from the socket into the TLS object. False at TCP EOF."""
        self.sock.settimeout(self._left())
        data = self.sock.recv(262144)
        if not data:
            self.tcp_eof = True
            self.incoming.write_eof()
            return False
        self.raw_in += data
        self.incoming.write(data)
        return True

    def handshake(self, send_first_flight: Callable[[bytes], None] | None = None):
        """Completes the handshake. A client's first flight is handed to send_first_flight when
        given, which re-frames or dribbles it and sends the pieces with send_raw()."""
        first = True
        while True:
            try:
                self.obj.do_handshake()
                self.flush()
                return
            except ssl.SSLWantReadError:
                if first and send_first_flight is not None:
                    send_first_flight(self.outgoing.read())
                else:
                    self.flush()
                first = False
                if self.tcp_eof or not self.recv_raw():
                    raise ConnectionError("connection closed during the TLS handshake")

    def drain_app_data(self) -> bytes:
        """Decrypts whatever has arrived. Sets close_notify when the peer's arrived."""
        out = bytearray()
        while True:
            try:
                chunk = self.obj.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                break
            except ssl.SSLEOFError:
                break
            if not chunk:
                # SSLObject.read returns b'' for the peer's close_notify when we have not sent
                # ours (and raises SSLZeroReturnError when we have); a bare EOF is SSLEOFError.
                self.close_notify = True
                break
            out += chunk
        return bytes(out)

    def write(self, data: bytes):
        for i in range(0, len(data), 16384):
            self.obj.write(data[i:i + 16384])
            self.flush()

    def send_close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is sent; theirs has not arrived: fine, that is half-close
        except (ssl.SSLError, OSError):
            pass
        self.flush()

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_until_eof(self) -> bytes:
        """Reads application data until the peer's TCP FIN (bounded by the deadline)."""
        out = bytearray()
        while not self.tcp_eof:
            self.recv_raw()
            out += self.drain_app_data()
            self.flush()
        out += self.drain_app_data()
        return bytes(out)

    def read_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += self.drain_app_data()
            self.flush()
            if len(out) >= n:
                break
            if self.tcp_eof or not self.recv_raw():
                out += self.drain_app_data()
                break
        return bytes(out)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def bulk_exchange(conn: MemTls, payload: bytes, expect: int, timeout: float = 120.0) -> str:
    """Sends `payload` while receiving `expect` bytes at the same time (one thread, select loop,
    so neither direction waits for the other). Returns the SHA-256 hex of what was received."""
    sock = conn.sock
    sock.setblocking(False)
    digest = hashlib.sha256()
    received = 0
    pos = 0
    pending = bytearray()
    deadline = time.monotonic() + timeout
    while received < expect or pos < len(payload) or pending:
        while pos < len(payload) and len(pending) < (1 << 20):
            n = min(16384, len(payload) - pos)
            conn.obj.write(payload[pos:pos + n])
            pos += n
            pending += conn.outgoing.read()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"bulk transfer: sent {pos - len(pending)}/{len(payload)}, "
                               f"received {received}/{expect}")
        want_read = received < expect and not conn.tcp_eof
        r, w, _ = select.select([sock] if want_read else [], [sock] if pending else [], [],
                                min(left, 1.0))
        if w:
            try:
                n = sock.send(pending)
                conn.raw_out += pending[:n]
                del pending[:n]
            except BlockingIOError:
                pass
        if r:
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                data = None
            if data == b"":
                conn.tcp_eof = True
                conn.incoming.write_eof()
            elif data:
                conn.incoming.write(data)
            chunk = conn.drain_app_data() if data is not None else b""
            received += len(chunk)
            digest.update(chunk)
            pending += conn.outgoing.read()
        if conn.tcp_eof and received < expect:
            raise ConnectionError(f"peer closed after {received}/{expect} bytes")
    sock.setblocking(True)
    return digest.hexdigest()


# ---- ordinary clients


@dataclasses.dataclass
class HttpAnswer:
    status: int
    body: str
    peer_cert_san: tuple


def _https_exchange(port: int, name: str, ctx: ssl.SSLContext, timeout: float, host: str,
                    source: str | None) -> tuple[int, bytes, tuple]:
    """GET / over Python's ssl: (client source port, raw answer, the server's SANs)."""
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as raw:
        local = raw.getsockname()[1]
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = bytearray()
            while chunk := s.recv(65536):
                data += chunk
            san = tuple(v for k, v in s.getpeercert().get("subjectAltName", ()))
    return local, bytes(data), san


def https_get(port: int, name: str, ctx: ssl.SSLContext, timeout: float = 20.0,
              host: str = "127.0.0.1", source: str | None = None) -> HttpAnswer:
    """GET / with Python's ssl, certificate and hostname verified against the test CA; from
    the address `source` when given (a visitor the events can tell from the gateway's own)."""
    _, data, san = _https_exchange(port, name, ctx, timeout, host, source)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else 0
    return HttpAnswer(status, body.decode(errors="replace"), san)


def https_get_raw(port: int, name: str, ctx: ssl.SSLContext, source: str | None = None,
                  timeout: float = 20.0) -> tuple[int, bytes]:
    """GET / like https_get, but returns (client source port, raw answer): the port finds the
    connection's event."""
    local, data, _ = _https_exchange(port, name, ctx, timeout, "127.0.0.1", source)
    return local, data


def curl_get(port: int, name: str, ca: Path, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", str(int(timeout)), "--noproxy", "*",
                           "--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(ca),
                           f"https://{name}:{port}/"],
                          capture_output=True, text=True, timeout=timeout + 10, env=clean_env())


def s_client_get(port: int, name: str, ca: Path, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "s_client", "-brief", "-ign_eof", "-connect", f"127.0.0.1:{port}",
                           "-servername", name, "-CAfile", str(ca), "-verify_return_error",
                           "-verify_hostname", name],
                          input=f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n", capture_output=True,
                          text=True, timeout=timeout, env=clean_env())


# ----------------------------------------------------------------------------------------------
# the user's upstream TLS server


def source_stream(total: int, block: int = 1 << 20):
    """`total` bytes in chunks: a fixed pseudo-random 1 MiB block repeated, cheap to make at GiB
    sizes. Receivers compare the byte count and the SHA-256 with the same stream made locally."""
    pattern = random.Random(7).randbytes(block)
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield pattern[:n] if n < block else pattern
        sent += n


class Upstream:
    """A TLS server on 127.0.0.1:0 (a thread per connection, it's a test). Modes:
      http      answers one request with `hello from LABEL sni=NAME`, then closes
      echo      echoes until EOF; records SHA-256 and size of what it received
      halfclose_client_first   reads until TCP FIN (recording whether close_notify came first),
                then answers sha256 + the data, sends close_notify and FIN
      halfclose_upstream_first sends a greeting, close_notify and FIN at once, then reads until FIN
      silent    completes the handshake, then reads and discards until EOF
      source    sends `source_bytes` of source_stream() (then close_notify and FIN)
      reset     sends 256 KiB, then resets the TCP connection (RST) without a TLS goodbye
    Results (dicts) go to .results, handler exceptions to .errors. cert=(chain.pem, key.pem) serves
    that certificate instead of one from the test CA (e.g. one an ACME CA issued); port= listens on
    that port instead of a free one (e.g. where an ssh -R already points)."""

    def __init__(self, pki: Pki, mode: str = "http", label: str = "upstream",
                 names: Iterable[str] = UPSTREAM_NAMES, source_bytes: int = 0,
                 cert: tuple[Path, Path] | None = None, port: int = 0):
        self.pki = pki
        self.mode = mode
        self.source_bytes = source_bytes
        self.label = label
        self.names = list(names)
        self.cert = cert
        self.ctx = self._context(self.names)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1024)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.results: list[dict] = []
        self.errors: list[str] = []
        self.server_names: list[str | None] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _context(self, names) -> ssl.SSLContext:
        if self.cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
        else:
            ctx = self.pki.server_context(names)

        def on_sni(obj, server_name, _ctx):
            try:
                obj.sni = server_name  # the SSLSocket/SSLObject of this connection
            except AttributeError:
                pass
            with self._lock:
                self.server_names.append(server_name)
        ctx.sni_callback = on_sni
        return ctx

    def add_names(self, *names: str):
        """Serves a certificate that also covers `names` (for generated hostnames)."""
        self.names += list(names)
        self.ctx = self._context(self.names)

    def _accept_loop(self):
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _handle(self, conn: socket.socket):
        conn.settimeout(60)
        # Like a well-behaved server: without it Nagle holds back the 2nd record of each flight
        # until the ssh client's delayed ACK (~40 ms per exchange), which would hide the gateway's.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = {"handshaken": False}
        try:
            getattr(self, "_mode_" + self.mode)(conn, state)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as e:
            # A probe that hangs up mid-handshake is normal; anything after the handshake is not.
            if state["handshaken"]:
                with self._lock:
                    self.errors.append(f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - report everything to the test
            with self._lock:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, result: dict):
        with self._lock:
            self.results.append(result)

    def _mode_http(self, conn, state):
        try:
            s = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return  # readiness probes hang up after the ServerHello
        state["handshaken"] = True
        with s:
            req = bytearray()
            while b"\r\n\r\n" not in req and len(req) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    return
                req += chunk
            body = f"hello from {self.label} sni={getattr(s, 'sni', None)}\n".encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self._record({"request": bytes(req)})
            # close_notify (OpenSSL 3 clients such as s_client call a bare EOF an error); unwrap
            # then waits for the client's, bounded.
            try:
                s.settimeout(5)
                s.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass

    def _mode_echo(self, conn, state):
        try:
            s = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return
        state["handshaken"] = True
        digest, total = hashlib.sha256(), 0
        with s:
            while True:
                try:
                    chunk = s.recv(262144)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                digest.update(chunk)
                total += len(chunk)
                s.sendall(chunk)
        self._record({"bytes": total, "sha256": digest.hexdigest()})

    def _mode_silent(self, conn, state):
        try:
            s = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with s:
            while s.recv(65536):
                pass

    def _mode_source(self, conn, state):
        s = self.ctx.wrap_socket(conn, server_side=True)
        state["handshaken"] = True
        with s:
            s.settimeout(300)
            for chunk in source_stream(self.source_bytes):
                s.sendall(chunk)
            self._record({"sent": self.source_bytes})
            s.unwrap()

    def _mode_reset(self, conn, state):
        s = self.ctx.wrap_socket(conn, server_side=True)
        state["handshaken"] = True
        s.sendall(bytes(256 * 1024))
        # SO_LINGER with a zero timeout: close() sends an RST, as a crashing server's kernel does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._record({"reset": True})
        s.close()

    def _mode_halfclose_client_first(self, conn, state):
        t = MemTls(conn, self.ctx, server_side=True, timeout=60)
        t.handshake()
        state["handshaken"] = True
        got = t.read_until_eof()  # returns only once the client's FIN came through the tunnel
        answer = hashlib.sha256(got).hexdigest().encode() + b"\n" + got
        t.write(answer)
        t.send_close_notify()
        t.shutdown_write()
        self._record({"got": got, "close_notify": t.close_notify, "tcp_eof": t.tcp_eof,
                      "raw_in": bytes(t.raw_in), "raw_out": bytes(t.raw_out)})

    def _mode_halfclose_upstream_first(self, conn, state):
        t = MemTls(conn, self.ctx, server_side=True, timeout=60)
        t.handshake()
        state["handshaken"] = True
        t.write(b"greeting from upstream, then FIN\n")
        t.send_close_notify()
        t.shutdown_write()
        got = t.read_until_eof()  # the client still talks after our FIN
        self._record({"got": got, "close_notify": t.close_notify, "tcp_eof": t.tcp_eof,
                      "raw_in": bytes(t.raw_in), "raw_out": bytes(t.raw_out)})

    def open_connections(self) -> int:
        """Connections accepted whose handler is still running (the peer has not closed)."""
        return sum(1 for t in self._threads if t.is_alive())

    def wait_results(self, n: int, timeout: float = 30.0) -> list[dict]:
        wait_for(lambda: len(self.results) >= n or self.errors, timeout,
                 f"{n} finished connection(s) at upstream {self.label}")
        assert not self.errors, f"upstream {self.label} errors: {self.errors[:5]}"
        return self.results

    def close(self):
        self._closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self._acceptor.join(2)


# ----------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> SshKeys:
    return SshKeys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.access(SNIGATE_BIN, os.X_OK):
        pytest.fail(f"no snigate binary at {SNIGATE_BIN} (build it: scripts/build, or set SNIGATE_BIN)",
                    pytrace=False)


@pytest.fixture
def client_ctx(pki) -> ssl.SSLContext:
    return pki.client_context()


def _finish_gateway(gw: Gateway, request) -> list[str]:
    """Stops tunnels then the gateway; returns the problems found (empty = clean)."""
    problems = []
    for t in gw.tunnels:
        t.close()
    if gw.proc is not None:
        was_running = gw.running()
        rc = gw.stop()
        if was_running and rc != 0:
            problems.append(f"snigate exited {rc} on SIGTERM (expected 0)")
        elif not was_running and rc not in (0, None) and not getattr(gw, "expect_exit", False):
            problems.append(f"snigate had already exited with {rc} during the test")
    report = gw.sanitizer_report()
    if report:
        problems.append("sanitizer report in the gateway log:\n" + report)
    return problems


@pytest.fixture
def gateway_factory(tmp_path, keys, request):
    """gateway_factory(authorized_keys="default"|TEXT|None, args=[...], start=True, state_dir=None,
    admin_listen="off"|"127.0.0.1:0", env={...}, host="127.0.0.1"). authorized_keys None: no file
    at all."""
    made: list[Gateway] = []

    def make(authorized_keys: str | None = "default", args: Iterable[str] = (),
             start: bool = True, state_dir: Path | None = None, admin_listen: str = "off",
             env: dict[str, str] | None = None, host: str = "127.0.0.1") -> Gateway:
        d = tmp_path / f"gw{len(made)}"
        d.mkdir()
        gw = Gateway(d, keys, authorized_keys, args, state_dir, admin_listen, env, host)
        made.append(gw)
        request.node._snigate_gateways = made
        return gw.start() if start else gw

    yield make
    problems = []
    for gw in made:
        problems += _finish_gateway(gw, request)
    if problems:
        pytest.fail("\n".join(problems) + "\n-- gateway log tail:\n" +
                    "\n".join(tail(g.log_text(), 60) for g in made), pytrace=False)


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def upstream_factory(pki):
    made: list[Upstream] = []

    def make(mode: str = "http", label: str | None = None, **kw) -> Upstream:
        u = Upstream(pki, mode=mode, label=label or f"up{len(made)}", **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


@pytest.fixture
def upstream(upstream_factory) -> Upstream:
    return upstream_factory("http", "upstream")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the gateway log and each ssh client's output to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for gw in getattr(item, "_snigate_gateways", []):
            rep.sections.append((f"snigate log ({gw.dir})", tail(gw.log_text(), 120)))
            for t in gw.tunnels:
                rep.sections.append((f"ssh client ({t.log_path.name})", t.describe()))
