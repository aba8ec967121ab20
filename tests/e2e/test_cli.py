"""`snigate serve` start-up: bad flags, no authorized_keys yet, host keys (DESIGN section 2 and 3)."""

import subprocess

import pytest

from conftest import SNIGATE_BIN, clean_env, fwd, https_get


@pytest.mark.parametrize("args,names", [
    (["--bogus"], "--bogus"),
    (["--tls-listen", "not-an-address"], "--tls-listen"),
    (["--ssh-listen", "127.0.0.1:99999"], "--ssh-listen"),
    (["--log-level", "loud"], "--log-level"),
], ids=["unknown-flag", "bad-tls-listen", "bad-port", "bad-log-level"])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, names):
    # Proves: a bad flag or value is refused at start-up with exactly one line naming it, exit 2.
    p = subprocess.run([SNIGATE_BIN, "serve", "--state-dir", str(tmp_path / "state"), *args],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path, env=clean_env())
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [l for l in (p.stderr + p.stdout).splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert names in lines[0], lines


def test_starts_without_authorized_keys_and_says_how_to_add_one(gateway_factory, upstream):
    # Proves: with no authorized_keys file the gateway still starts, logs the missing file and how to
    # add a key, and refuses every key until then.
    gw = gateway_factory(authorized_keys=None)
    log = gw.log_text()
    assert str(gw.authorized_keys) in log, log[-3000:]
    assert "keys add" in log or "ssh-ed25519" in log, log[-3000:]
    t = gw.tunnel([fwd("app.alice.test", upstream)], key="alice")
    assert t.run_to_exit() == 255
    assert "Permission denied" in t.all_output()


def test_host_key_generated_once_and_reused(gateway_factory, upstream, client_ctx):
    # Proves: the Ed25519 host key is written in OpenSSH format on first start (ssh-keygen reads it,
    # its fingerprint is logged) and reused after a restart, so a pinned known_hosts keeps working.
    first = gateway_factory()
    pub = (first.state_dir / "ssh_host_ed25519_key.pub").read_text().split()[1]
    fp = subprocess.run(["ssh-keygen", "-lf", str(first.state_dir / "ssh_host_ed25519_key")],
                        capture_output=True, text=True, timeout=10)
    assert fp.returncode == 0, fp.stderr
    assert fp.stdout.split()[1] in first.log_text(), "host key fingerprint not logged at start"
    assert first.stop() == 0
    second = gateway_factory(state_dir=first.state_dir)
    assert (second.state_dir / "ssh_host_ed25519_key.pub").read_text().split()[1] == pub
    second.known_hosts.write_text(f"[127.0.0.1]:{second.ssh_port} ssh-ed25519 {pub}\n")
    second.tunnel([fwd("app.alice.test", upstream)]).start()
    assert https_get(second.tls_port, "app.alice.test", client_ctx).status == 200


def serve_on(tmp_path, *listen_args, timeout=20):
    """`snigate serve` with the given listener flags; returns once it exits (bounded)."""
    return subprocess.run([SNIGATE_BIN, "serve", "--state-dir", str(tmp_path / "second"),
                           "--authorized-keys", str(tmp_path / "none"), *listen_args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=clean_env())


@pytest.mark.parametrize("option", ["--tls-listen", "--ssh-listen", "--admin-listen"])
def test_second_gateway_on_the_same_port_is_refused(gateway_factory, upstream, client_ctx,
                                                    tmp_path, option):
    # Proves: a second gateway asked to listen where the first one does is refused at start with
    # one line naming the option and the address, exit 2 (it used to share the SSH and TLS ports
    # through SO_REUSEPORT and take a share of the visitors); the first keeps every visitor.
    gw = gateway_factory(admin_listen="127.0.0.1:0")
    gw.tunnel([fwd("app.alice.test", upstream)], key="alice").start()
    port = {"--tls-listen": gw.tls_port, "--ssh-listen": gw.ssh_port,
            "--admin-listen": gw.admin_port}[option]
    flags = {"--tls-listen": "127.0.0.1:0", "--ssh-listen": "127.0.0.1:0", "--admin-listen": "off"}
    flags[option] = f"127.0.0.1:{port}"
    p = serve_on(tmp_path, *[x for kv in flags.items() for x in kv])
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [l for l in (p.stderr + p.stdout).splitlines() if l.strip()]
    assert lines == [f"snigate: {option} 127.0.0.1:{port}: address already in use (another "
                     f"process listens there): stop it, or choose another {option}"], lines
    for _ in range(8):  # every connection reaches the first gateway's tunnel
        assert https_get(gw.tls_port, "app.alice.test", client_ctx, timeout=5).status == 200


def test_hostkey_never_creates_a_key_and_reads_serves_settings(gateway_factory, tmp_path):
    # Proves: `snigate hostkey` with no host key in its state dir says where it looked (one line,
    # exit 1) and creates nothing; pointed at the gateway's state dir through SNIGATE_STATE_DIR or
    # a --config file it prints the key the gateway serves.
    empty = tmp_path / "empty"
    p = subprocess.run([SNIGATE_BIN, "hostkey", "--state-dir", str(empty)], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path, env=clean_env())
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and f"no host key at {empty}/ssh_host_ed25519_key" in p.stderr
    assert not empty.exists(), "hostkey created the state dir"
    assert not (tmp_path / "snigate-data").exists()
    gw = gateway_factory()
    want = subprocess.run(["ssh-keygen", "-lf", str(gw.state_dir / "ssh_host_ed25519_key")],
                          capture_output=True, text=True, timeout=10).stdout.split()[1]
    p = subprocess.run([SNIGATE_BIN, "hostkey"], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path, env={**clean_env(), "SNIGATE_STATE_DIR": str(gw.state_dir)})
    assert p.returncode == 0 and p.stdout.split()[0] == want, (p.stdout, p.stderr)
    conf = tmp_path / "gw.toml"
    conf.write_text(f'state_dir = "{gw.state_dir}"\n')
    p = subprocess.run([SNIGATE_BIN, "hostkey", "--config", str(conf)], capture_output=True,
                       text=True, timeout=30, cwd=tmp_path, env=clean_env())
    assert p.returncode == 0 and p.stdout.split()[0] == want, (p.stdout, p.stderr)
