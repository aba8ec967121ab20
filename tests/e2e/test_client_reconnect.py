"""The client side (issue 14 part 3): deploy/ssh_config's Host block and deploy/snigate-tunnel.service
keep a tunnel up by themselves. The test runs the documented block with the real OpenSSH client
(only the host, port, key, forward and known_hosts are the test's own, and ServerAliveInterval is
1 s instead of 15 s so a drop is noticed in seconds) under the unit's ExecStart=, Restart= and
RestartSec=, then breaks the connection and polls a verified TLS request through the tunnel
until it works again:
  - ssh killed: the gateway sees the connection close and ends the old session at once;
  - the network dropped (a test-owned TCP proxy between ssh and the gateway stops passing bytes
    but keeps both sockets open): ssh notices through ServerAlive and exits 255, while the gateway
    still holds the old session; the restarted client's `tls --takeover` moves the name at once.

systemd --user can't run here (no systemd as PID 1), so `Supervisor` stands in for it: it applies
Restart=on-failure (restart after a non-zero exit or a signal) and RestartSec= as the unit says,
bounded in restarts and time. `systemd-analyze verify` checks the unit where it is installed. The
drop case runs under the README's autossh recipe too (Debian's autossh, the real tool).

What it deliberately doesn't do: wait for the gateway to time the old session out (the point of
--takeover is not to), or sleep for anything it can poll."""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, SSH, clean_env, https_get, read_events, tail, wait_for

AUTOSSH = shutil.which("autossh") or "/usr/bin/autossh"
SSH_CONFIG = REPO / "deploy" / "ssh_config"
UNIT = REPO / "deploy" / "snigate-tunnel.service"
NAME = "app.alice.test"
EVENTS = "events.jsonl"  # relative: snigate runs in the gateway's own directory
RECOVER_TIMEOUT = 60.0  # ServerAlive 3 x 1 s + RestartSec + login, with room for slow builds


def unit_settings() -> dict[str, str]:
    """Key=value lines of the unit (the last one wins, as in systemd; no drop-ins here)."""
    out = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def documented_config(tmp: Path, proxy_port: int, key: Path, upstream_port: int) -> Path:
    """deploy/ssh_config with the CHANGE lines pointed at the test's gateway (through the proxy),
    key and upstream; every other line as documented. Fails if a documented line moved."""
    text = SSH_CONFIG.read_text()
    for old, new in (
        ("HostName tunnel.example.com", "HostName 127.0.0.1"),
        ("Port 2222", f"Port {proxy_port}"),
        ("IdentityFile ~/.ssh/id_ed25519", f"IdentityFile {key}"),
        ("RemoteForward app.alice.tunnel.example.com:443 localhost:8443",
         f"RemoteForward {NAME}:443 127.0.0.1:{upstream_port}"),
    ):
        assert text.count(old) == 1, f"{SSH_CONFIG} no longer has exactly one `{old}`"
        text = text.replace(old, new)
    path = tmp / "ssh_config"
    path.write_text(text)
    return path


class Supervisor:
    """Runs a command again and again as systemd's Restart=on-failure does: after a non-zero exit
    status or death by a signal, wait RestartSec and start it again; after exit 0, stop. Bounded
    in restarts. stdin is /dev/null and output goes to a file, as under systemd."""

    def __init__(self, argv: list[str], restart: str, restart_sec: float, log: Path,
                 max_starts: int = 5):
        assert restart == "on-failure", f"the test knows Restart=on-failure, the unit says {restart}"
        self.argv = argv
        self.restart_sec = restart_sec
        self.log = log
        self.max_starts = max_starts
        self.exits: list[int] = []  # returncode of each finished run (negative: the signal)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while self.starts < self.max_starts:
            with self._lock, open(self.log, "ab") as out:
                if self._stopping.is_set():  # checked under the lock stop() takes: no orphan
                    return
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=clean_env(),
                                             start_new_session=True)
                self.starts += 1
            rc = self.proc.wait()
            self.exits.append(rc)
            if rc == 0:
                return  # Restart=on-failure: a clean exit stays down
            self._stopping.wait(self.restart_sec)

    def current_pid(self) -> int | None:
        with self._lock:
            return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self):
        self._stopping.set()
        with self._lock:
            if self.proc and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
        self._thread.join(10)


class DroppingProxy:
    """A TCP proxy on 127.0.0.1:0 to `target`, a thread pair per connection. drop() makes every
    connection open now go silent both ways while its sockets stay open, like a network that
    vanished under both ends; connections made later pass bytes again."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._conns: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while not self._closed.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            silent = threading.Event()
            with self._lock:
                self.accepted += 1
                self._conns.append((client, server, silent))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, silent), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, silent: threading.Event):
        src.settimeout(0.2)
        while not silent.is_set() and not self._closed.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:  # a reset (a killed ssh with unread input resets): pass it on
                data, how = b"", socket.SHUT_RDWR
            else:
                how = socket.SHUT_WR  # a FIN: pass on the half-close
            if silent.is_set():
                break  # dropped while we were reading: this chunk is lost, like the rest
            if not data:
                try:
                    dst.shutdown(how)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                break

    def drop(self) -> int:
        """Silences every open connection; returns how many."""
        with self._lock:
            for _, _, silent in self._conns:
                silent.set()
            return len(self._conns)

    def close(self):
        self._closed.set()
        self.sock.close()
        with self._lock:
            for a, b, _ in self._conns:
                a.close()
                b.close()


class Autossh:
    """The autossh recipe: `AUTOSSH_GATETIME=0 autossh -M 0 <ssh arguments>` (no monitor port:
    ServerAlive does the watching; autossh restarts ssh after exit 255 or 1, not after 0)."""

    def __init__(self, ssh_argv: list[str], log: Path):
        env = {**clean_env(), "AUTOSSH_GATETIME": "0", "AUTOSSH_PATH": ssh_argv[0]}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([AUTOSSH, "-M", "0", *ssh_argv[1:]],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # autossh ends its ssh on SIGTERM
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def reconnecting(gateway_factory, upstream, keys, tmp_path):
    """start(how): the gateway, a dropping proxy in front of its SSH port, and the documented
    client kept up by `how`: "unit" (the Supervisor running the unit's ExecStart=) or "autossh";
    returns (gateway, proxy, client)."""
    made = []

    def start(how: str = "unit"):
        gw = gateway_factory(args=["--event-log", EVENTS])
        proxy = DroppingProxy(gw.ssh_port)
        cfg = documented_config(tmp_path, proxy.port, keys.path("alice"), upstream.port)
        known_hosts = tmp_path / "known_hosts"  # the pinned host key, for the proxy's address
        known_hosts.write_text(gw.known_hosts.read_text().replace(
            f"[127.0.0.1]:{gw.ssh_port}", f"[127.0.0.1]:{proxy.port}"))
        unit = unit_settings()
        exec_start = shlex.split(unit["ExecStart"])
        assert exec_start[0] == "/usr/bin/ssh", exec_start
        ssh_log = tmp_path / "ssh.log"  # every run appends
        argv = [SSH, "-F", str(cfg), "-E", str(ssh_log), "-v",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                # the one documented value the test shortens: notice a drop in 3 s, not 45 s
                "-o", "ServerAliveInterval=1", *exec_start[1:]]
        if how == "unit":
            client = Supervisor(argv, unit["Restart"], float(unit["RestartSec"]),
                                tmp_path / "client.out")
        else:
            client = Autossh(argv, tmp_path / "client.out")
        client.ssh_log = ssh_log
        made.append((proxy, client))
        return gw, proxy, client

    yield start
    for proxy, client in made:
        client.stop()
        proxy.close()


def wait_served(gw, ctx, what: str):
    """Polls a verified HTTPS request for NAME through the gateway until the upstream answers."""
    def served():
        try:
            a = https_get(gw.tls_port, NAME, ctx, timeout=5)
        except (OSError, ConnectionError):
            return None
        return a if a.status == 200 and f"sni={NAME}" in a.body else None
    return wait_for(served, RECOVER_TIMEOUT, what)


def session_end_reasons(gw) -> list[str]:
    return [e["object"]["reason"] for e in read_events(gw.dir / EVENTS)
            if e["event_type"].startswith("session_ended")]


def test_documented_files_say_what_the_readme_promises(tmp_path):
    # Proves: OpenSSH reads the Host block with the promised settings (`ssh -G` prints what it
    # would use), the unit restarts on failure with a delay and never gives up, and, where
    # systemd-analyze is installed, systemd accepts the unit.
    g = subprocess.run([SSH, "-G", "-F", str(SSH_CONFIG), "snigate-tunnel"], capture_output=True,
                       text=True, timeout=10, env=clean_env())
    assert g.returncode == 0, g.stderr
    effective = {}
    for line in g.stdout.splitlines():
        k, _, v = line.partition(" ")
        effective.setdefault(k, []).append(v)
    for k, v in {"serveraliveinterval": "15", "serveralivecountmax": "3",
                 "exitonforwardfailure": "yes", "requesttty": "false", "batchmode": "yes",
                 "remotecommand": "tls --takeover",
                 "remoteforward": "[app.alice.tunnel.example.com]:443 [localhost]:8443"}.items():
        assert effective.get(k) == [v], (k, effective.get(k))
    unit = unit_settings()
    assert unit["Restart"] == "on-failure" and float(unit["RestartSec"]) > 0, unit
    assert unit["StartLimitIntervalSec"] == "0" and unit["WantedBy"] == "default.target", unit
    analyze = shutil.which("systemd-analyze")
    if analyze:
        runtime = tmp_path / "runtime"  # --user verify wants a runtime dir, not a running manager
        runtime.mkdir(mode=0o700)
        v = subprocess.run([analyze, "--user", "verify", str(UNIT)], capture_output=True,
                           text=True, timeout=30, env={**clean_env(), "XDG_RUNTIME_DIR": str(runtime)})
        assert v.returncode == 0 and not v.stdout.strip() and not v.stderr.strip(), v


def test_tunnel_comes_back_after_ssh_is_killed(reconnecting, client_ctx):
    # Proves: with the documented block and unit, killing the ssh client (the gateway sees the
    # TCP connection close) brings the tunnel back by itself: a new ssh, a new session, the name
    # served again.
    gw, proxy, sup = reconnecting()
    wait_served(gw, client_ctx, "the tunnel to come up")
    pid = sup.current_pid()
    assert pid and sup.starts == 1, (pid, sup.starts)
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: sup.starts == 2, RECOVER_TIMEOUT, "the supervisor to restart ssh")
    wait_served(gw, client_ctx, "the tunnel to come back")
    assert sup.exits == [-signal.SIGKILL] and proxy.accepted == 2, (sup.exits, proxy.accepted)
    wait_for(lambda: session_end_reasons(gw), 10, "the old session's session_ended event")
    assert session_end_reasons(gw) == ["client_disconnect"], session_end_reasons(gw)


@pytest.mark.parametrize("how", ["unit", "autossh"])
def test_tunnel_comes_back_after_a_network_drop_with_takeover(reconnecting, client_ctx, how):
    # Proves: when the network drops under both ends, ServerAlive makes ssh exit 255, the unit (or
    # autossh) restarts it, and the new session's `tls --takeover` moves the name from the old
    # session, which the gateway still held (it ends as taken_over, not as a dead connection), so
    # the name is served again within seconds instead of after the gateway's timeouts.
    gw, proxy, client = reconnecting(how)
    wait_served(gw, client_ctx, "the tunnel to come up")
    assert proxy.drop() == 1
    t_drop = time.monotonic()
    wait_for(lambda: proxy.accepted == 2, RECOVER_TIMEOUT,
             "ssh to notice the drop and be restarted")
    wait_served(gw, client_ctx, "the tunnel to come back")
    recovered = time.monotonic() - t_drop
    wait_for(lambda: session_end_reasons(gw), 10, "the old session's session_ended event")
    assert session_end_reasons(gw) == ["taken_over"], session_end_reasons(gw)
    if how == "unit":
        assert client.current_pid() and client.exits == [255], client.exits
    # ServerAlive 3 x 1 s, RestartSec, one login: well under the gateway's 300 s idle timeout
    assert recovered < 30, f"recovered after {recovered:.1f}s"
    log = client.ssh_log.read_text(errors="replace")
    assert "Timeout, server 127.0.0.1 not responding." in log, tail(log)
    assert proxy.accepted == 2, proxy.accepted
