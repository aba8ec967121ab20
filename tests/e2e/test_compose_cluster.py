"""compose.cluster.yaml without containers: the file is read as Compose reads it (YAML merge keys,
${VAR:-default} with nothing set), and each piece is checked against the real thing it feeds:

- every snigate node's command line and environment through the real binary (`serve
  --print-config`, which parses every layer and the cluster rules), then a real start with the
  files scripts/cluster-certs made, mapped through the service's volumes: the host key loads and
  the relay certificate passes the node's own check (cluster/relay_tls.cpp) before the start stops
  at the test's closed etcd port; a node given another node's certificate is refused;
- the certificates' subjectAltName DNS names against the node ids, and their chain and purposes;
- etcd's initial cluster against the three members and the nodes' --cluster-etcd;
- deploy/cluster/haproxy.cfg: `haproxy -c`, send-proxy-v2 to every node's TLS listener (and only
  there), plain TCP to every SSH listener, its source inside --trusted-proxy, health checks on the
  admin port.

The real cluster (podman-compose up, ssh -R and curl through HAProxy) is in README's "Running a
cluster"; it needs a container engine, which CI's e2e run does not have.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import OPENSSL, REPO, SNIGATE_BIN, clean_env, free_closed_port, run

COMPOSE = REPO / "compose.cluster.yaml"
CERTS_SCRIPT = REPO / "scripts" / "cluster-certs"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
STATE = "./cluster-state"  # the compose file's directory for the script's output
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR} / ${VAR:-default} over the whole document, with `env` as the shell's."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        return VAR_RE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), {})


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def nodes(services) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("image", "").endswith("/snigate:latest")}


def etcds(services) -> dict[str, dict]:
    return {name: s for name, s in services.items() if "etcd" in s.get("image", "")}


def flag(command: list[str], name: str) -> str:
    assert command.count(name) == 1, f"{name} once in {command}"
    return command[command.index(name) + 1]


def mounts(service: dict, state: Path) -> dict[str, Path]:
    """Container path -> host path, with ./cluster-state replaced by the test's `state`."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if source.startswith(STATE + "/") or source == STATE:
            out[target] = state / source[len(STATE) + 1:]
        elif source.startswith("./"):
            out[target] = REPO / source[2:]
    return out


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    """scripts/cluster-certs run into a temp dir, as the operator runs it (default node ids)."""
    d = tmp_path_factory.mktemp("cluster-state")
    owner = f"{os.getuid()}:{os.getgid()}"
    run(["bash", str(CERTS_SCRIPT), "--dir", str(d), "--owner", owner])
    return d


def node_env(node: dict, files: dict[str, Path]) -> dict[str, str]:
    """The node's compose environment, container file paths turned into the state dir's files."""
    env = clean_env()
    for key, value in node["environment"].items():
        env[key] = str(files.get(str(value), value))
    return env


def san_dns(cert: Path) -> list[str]:
    text = run([OPENSSL, "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"]).stdout.decode()
    return re.findall(r"DNS:([^,\s]+)", text)


# Each node's flags and environment are ones the real binary accepts as a cluster node's.
def test_every_node_config_parses_in_the_real_binary(services, state):
    assert sorted(nodes(services)) == ["node1", "node2", "node3"]
    seen = {"relay_listen": set(), "tls_listen": set(), "ssh_listen": set(), "admin_listen": set()}
    for name, node in nodes(services).items():
        cmd = node["command"]
        assert cmd[0] == "serve"
        assert flag(cmd, "--node-id") == name, "the node id is the service's name"
        env = node_env(node, mounts(node, state))
        p = subprocess.run([SNIGATE_BIN, *cmd, "--print-config"], env=env, capture_output=True,
                           timeout=30)
        assert p.returncode == 0, f"{name}: {p.stderr.decode()}"
        printed = p.stdout.decode()
        for key, value in [("node_id", name), ("cluster_etcd", env["SNIGATE_CLUSTER_ETCD"]),
                           ("trusted_proxy", None), ("cluster_ca", None), ("cluster_cert", None),
                           ("cluster_key", None), ("relay_listen", None)]:
            line = re.search(rf"^{key} = (.*?)  # (.*)$", printed, re.M)
            assert line, f"{name}: no {key} in --print-config:\n{printed}"
            assert line.group(2) != "default", f"{name}: {key} not set by the compose file"
            if value is not None:
                assert line.group(1) == f'"{value}"'
        # `exec nodeN snigate keys ...` sees the same environment (README's key commands).
        keys = subprocess.run([SNIGATE_BIN, "keys", "list"], capture_output=True, timeout=30,
                              env={**env, "SNIGATE_STATE_DIR": str(state / "data")})
        assert keys.returncode == 0, f"{name}: keys list: {keys.stderr.decode()}"
        for key in seen:
            addr = re.search(rf'^{key} = \[?"([^"]+)"', printed, re.M).group(1)
            assert not addr.startswith(("0.0.0.0", "[::]")), f"{name}: {key} {addr}: a literal"
            assert addr not in seen[key], f"{name}: {key} {addr} shared with another node"
            seen[key].add(addr)


# The script's certificates name the compose file's node ids, chain to its CA, serve both relay
# directions, and each node mounts its own.
def test_certificates_name_the_node_ids(services, state):
    tls = state / "tls"
    for name, node in nodes(services).items():
        files = mounts(node, state)
        cert, key, ca = files["/cluster/node.pem"], files["/cluster/node.key"], files["/cluster/ca.pem"]
        assert cert == tls / f"{name}.pem" and key == tls / f"{name}.key" and ca == tls / "ca.pem"
        assert san_dns(cert) == [name]
        for purpose in ("sslserver", "sslclient"):
            out = run([OPENSSL, "verify", "-purpose", purpose, "-CAfile", str(ca), str(cert)])
            assert out.stdout.decode().strip().endswith(": OK")
        pub = [run([OPENSSL, "x509", "-in", str(cert), "-pubkey", "-noout"]).stdout,
               run([OPENSSL, "pkey", "-in", str(key), "-pubout"]).stdout]
        assert pub[0] == pub[1], f"{name}: key does not match certificate"
        assert files["/data"] == state / "data"
    assert not any(str(p).startswith(str(state / "ca")) for n in nodes(services).values()
                   for p in mounts(n, state).values()), "the CA key is mounted nowhere"
    assert (state / "data" / "ssh_host_ed25519_key").is_file()
    assert (state / "data" / "authorized_keys").is_file()


# Run again, the script keeps what exists (a second run must not rotate the CA or the host key)
# and refuses a node id snigate would refuse.
def test_certs_script_is_idempotent(state):
    before = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    run(["bash", str(CERTS_SCRIPT), "--dir", str(state), "--owner", f"{os.getuid()}:{os.getgid()}"])
    after = {p: p.read_bytes() for p in state.rglob("*") if p.is_file()}
    assert after == before
    p = run(["bash", str(CERTS_SCRIPT), "--dir", str(state), "bad/id"], check=False)
    assert p.returncode == 2 and b"node id 'bad/id'" in p.stderr


def start_until_etcd(node: dict, state: Path, cert: Path | None = None) -> subprocess.Popen:
    """The node's real start with its files, against a closed etcd port: it gets as far as etcd."""
    files = mounts(node, state)
    if cert is not None:
        files["/cluster/node.pem"] = cert
        files["/cluster/node.key"] = cert.with_suffix(".key")
    env = node_env(node, files)
    env["SNIGATE_CLUSTER_ETCD"] = f"http://127.0.0.1:{free_closed_port()}"
    return subprocess.Popen([SNIGATE_BIN, *node["command"], "--state-dir", str(files["/data"])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# With the script's files each node passes its own certificate check and loads the shared host
# key; node2 given node1's certificate is refused at start with the reason.
def test_nodes_start_with_the_scripts_files(services, state):
    ns = nodes(services)
    procs = {name: start_until_etcd(node, state) for name, node in ns.items()}
    procs["swapped"] = start_until_etcd(ns["node2"], state, cert=state / "tls" / "node1.pem")
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=60)
        out[name] = (p.returncode, stdout.decode() + stderr.decode())
    for name in ns:
        rc, text = out[name]
        assert rc == 2 and "etcd not reachable" in text, f"{name}: {text}"
        assert "cluster-cert" not in text and "cluster-key" not in text, f"{name}: {text}"
    # The node loaded the script's key (not a new one) and wrote its public half back.
    host_key = state / "data" / "ssh_host_ed25519_key"
    public = run(["ssh-keygen", "-y", "-f", str(host_key)]).stdout.decode().split()[:2]
    written = (state / "data" / "ssh_host_ed25519_key.pub").read_text().split()
    assert written[:2] == public and written[2] == "snigate-host-key", written
    rc, text = out["swapped"]
    assert rc == 2 and "names node1, not --node-id node2" in text, text


# etcd: three members, each named once in the initial cluster with its own peer URL, and the
# nodes' --cluster-etcd lists exactly their client URLs.
def test_etcd_members_and_initial_cluster(services):
    members = etcds(services)
    assert len(members) == 3
    initial = None
    client_urls = []
    for name, m in members.items():
        env, cmd = m["environment"], m["command"]
        assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
        initial = initial or env["ETCD_INITIAL_CLUSTER"]
        assert env["ETCD_INITIAL_CLUSTER"] == initial
        assert flag(cmd, "--name") == name
        assert flag(cmd, "--listen-peer-urls") == flag(cmd, "--initial-advertise-peer-urls")
        assert flag(cmd, "--listen-client-urls") == flag(cmd, "--advertise-client-urls")
        assert f"{name}={flag(cmd, '--initial-advertise-peer-urls')}" in initial.split(",")
        client_urls.append(flag(cmd, "--advertise-client-urls"))
        assert any(v.split(":")[1] == "/var/lib/etcd" for v in m["volumes"]), f"{name}: a volume"
    assert len(initial.split(",")) == 3
    assert len({tuple(m["volumes"]) for m in members.values()}) == 3, "one volume per member"
    for name, node in nodes(services).items():
        assert sorted(node["environment"]["SNIGATE_CLUSTER_ETCD"].split(",")) == sorted(client_urls)
        assert set(node["depends_on"]) == set(members)


def haproxy_backends(cfg: str) -> dict[str, list[list[str]]]:
    """backend name -> its `server` lines' words."""
    out: dict[str, list[list[str]]] = {}
    current = None
    for line in cfg.splitlines():
        words = line.split("#")[0].split()
        if not words:
            continue
        if not line[0].isspace():
            current = words[1] if words[0] == "backend" else None
            if current:
                out[current] = []
        elif current and words[0] == "server":
            out[current].append(words)
    return out


# HAProxy: a valid config; every node's TLS listener gets send-proxy-v2, the SSH listeners plain
# TCP; its source is a trusted proxy of every node; checks go to the nodes' admin port; the public
# TLS port is the one the nodes advertise.
def test_haproxy_sends_proxy_v2_to_every_node(services, state):
    hap = services["haproxy"]
    cfg_path = mounts(hap, state)["/etc/haproxy/haproxy.cfg"]
    env = {**clean_env(), **{k: str(v) for k, v in hap["environment"].items()}}
    if os.path.exists(HAPROXY):
        p = run([HAPROXY, "-c", "-f", str(cfg_path)], env=env, check=False)
        assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    cfg = cfg_path.read_text()
    backends = haproxy_backends(cfg)
    tls_servers = {w[2]: w for w in backends["snigate_tls"]}
    ssh_servers = {w[2]: w for w in backends["snigate_ssh"]}
    source = ipaddress.ip_address(re.search(r"^\s+source (\S+)$", cfg, re.M).group(1))
    check_port = re.search(r"^\s+default-server .*\bport (\d+)", cfg, re.M).group(1)
    assert re.search(r"^\s+option httpchk$", cfg, re.M)
    ns = nodes(services)
    assert len(tls_servers) == len(ssh_servers) == len(ns)
    for name, node in ns.items():
        cmd = node["command"]
        tls_addr = flag(cmd, "--tls-listen")
        assert "send-proxy-v2" in tls_servers[tls_addr], f"{name}: {tls_servers[tls_addr]}"
        ssh_addr = flag(cmd, "--ssh-listen")
        assert not any(w.startswith("send-proxy") for w in ssh_servers[ssh_addr]), \
            "snigate reads no PROXY header on its SSH port"
        trusted = node["environment"]["SNIGATE_TRUSTED_PROXY"].split(",")
        assert any(source in ipaddress.ip_network(c) for c in trusted), f"{name}: {trusted}"
        assert flag(cmd, "--admin-listen").rsplit(":", 1)[1] == check_port
        assert node["environment"]["SNIGATE_ADVERTISE_PORT"] == hap["environment"]["SNIGATE_PUBLIC_TLS_PORT"]
    for port_var in ("SNIGATE_PUBLIC_TLS_PORT", "SNIGATE_PUBLIC_SSH_PORT"):
        assert f'bind ":${{{port_var}}}"' in cfg
