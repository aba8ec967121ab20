"""The SSH side: authentication, authorization of names, conflicts, and endpoints going away with
their session (DESIGN sections 3 and 5)."""

import signal
import ssl
import subprocess
import time

from conftest import SSH, ALERT_UNRECOGNIZED_NAME, fwd, https_get, is_alert, wait_for


def test_unknown_key_refused(gateway, upstream):
    # Proves: a key not in authorized_keys cannot log in (ssh exits 255, "Permission denied").
    t = gateway.tunnel([fwd("app.alice.test", upstream)], key="mallory")
    rc = t.run_to_exit()
    assert rc == 255, t.describe()
    assert "Permission denied" in t.all_output(), t.describe()
    assert is_alert(gateway.probe("app.alice.test"), ALERT_UNRECOGNIZED_NAME)


def test_forward_outside_permitlisten_refused_exit_on_forward_failure(gateway, upstream):
    # Proves: alice (permitlisten *.alice.test:443) may not bind app.bob.test: with
    # ExitOnForwardFailure ssh gives up with "remote port forwarding failed", and nothing routes.
    t = gateway.tunnel([fwd("app.bob.test", upstream)], key="alice")
    rc = t.run_to_exit()
    assert rc != 0, t.describe()
    assert "remote port forwarding failed" in t.all_output(), t.describe()
    assert is_alert(gateway.probe("app.bob.test"), ALERT_UNRECOGNIZED_NAME)


def test_forward_outside_permitlisten_reason_on_stderr(gateway, upstream):
    # Proves: without ExitOnForwardFailure, the `tls` session tells the user which name was refused
    # (on the session's stderr, not just OpenSSH's generic warning) and the name does not route.
    t = gateway.tunnel([fwd("app.bob.test", upstream)], key="alice", exit_on_forward_failure=False)
    t.start(wait=False)
    wait_for(lambda: "app.bob.test" in t.stderr() or not t.running(), 20,
             "a refusal naming app.bob.test on stderr")
    assert "app.bob.test" in t.stderr(), t.describe()
    assert is_alert(gateway.probe("app.bob.test"), ALERT_UNRECOGNIZED_NAME)


def test_key_without_permitlisten_refused_outside_domain(gateway, upstream):
    # Proves: a key with no permitlisten (carol) may not bind a name outside --domain.
    t = gateway.tunnel([fwd("app.alice.test", upstream)], key="carol")
    assert t.run_to_exit() != 0, t.describe()
    assert "remote port forwarding failed" in t.all_output(), t.describe()


def test_hostname_conflict_refused_first_keeps_working(gateway_factory, keys, upstream_factory,
                                                       client_ctx):
    # Proves: a second session claiming a name already held (by the same key, or by another key
    # that may also use the name) is refused with a message naming it, and the first session's
    # endpoint keeps serving before, during and after. (A same-key claim may only be refused once
    # the command arrives, since `tls --takeover` could move the name: either way ssh fails.)
    gateway = gateway_factory(authorized_keys=(
        f'permitlisten="*.alice.test:443" {keys.pub("alice")}\n'
        f'permitlisten="app.alice.test:443" {keys.pub("dave")}\n'))
    first = upstream_factory("http", "first")
    second = upstream_factory("http", "second")
    holder = gateway.tunnel([fwd("app.alice.test", first)]).start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    for key, efw in [("alice", True), ("alice", False), ("dave", True), ("dave", False)]:
        rival = gateway.tunnel([fwd("app.alice.test", second)], key=key, exit_on_forward_failure=efw)
        rival.start(wait=False)
        wait_for(lambda: "app.alice.test" in rival.stderr() or not rival.running(), 20,
                 f"{key}'s rival session to be refused")
        out = rival.all_output()
        assert ("remote port forwarding failed" in out or "app.alice.test" in rival.stderr()), \
            rival.describe()
        if not efw:
            # Without ExitOnForwardFailure only the gateway can tell the user why.
            assert "app.alice.test" in rival.stderr(), rival.describe()
        if rival.running():
            assert not rival.urls(), "a refused claim must not be announced"
            rival.close()
        else:
            assert rival.proc.returncode != 0, rival.describe()
        assert holder.running()
        assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    assert second.accepted == 0


def test_killed_ssh_client_endpoint_gone_within_seconds(gateway, upstream, client_ctx):
    # Proves: when the ssh client dies (SIGKILL: its kernel closes the TCP connection), its endpoint
    # is removed within a few seconds and the name then answers unrecognized_name.
    t = gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200
    t.kill(signal.SIGKILL)
    t.proc.wait(5)
    took = gateway.wait_unrouted("app.alice.test", timeout=10)
    assert took < 5.0, f"endpoint lingered {took:.1f}s"


def test_clean_disconnect_removes_endpoint_and_frees_name(gateway, upstream_factory, client_ctx):
    # Proves: after a session ends normally its name is free at once for a new session.
    a = upstream_factory("http", "a")
    b = upstream_factory("http", "b")
    t = gateway.tunnel([fwd("app.alice.test", a)]).start()
    t.close()
    gateway.wait_unrouted("app.alice.test", timeout=5)
    gateway.tunnel([fwd("app.alice.test", b)]).start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from b")


def test_any_user_name_accepted(gateway, upstream, client_ctx):
    # Proves: the SSH user name does not matter; only the key does.
    gateway.tunnel([fwd("app.alice.test", upstream)], user="someone-else").start()
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200


def test_sigterm_with_live_session_exits_0(gateway, upstream):
    # Proves: SIGTERM stops the gateway cleanly (exit 0) while a session is connected, and the ssh
    # client notices and exits.
    t = gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    t0 = time.monotonic()
    assert gateway.stop() == 0, gateway.log_text()[-3000:]
    assert time.monotonic() - t0 < 10
    t.wait_exit(15)


def _control(tunnel, op, forward):
    """`ssh -O forward|cancel -R ...` through the tunnel's ControlMaster socket."""
    return subprocess.run([SSH, "-F", "/dev/null", "-S", str(tunnel.gw.dir / "cm"), "-O", op,
                           "-R", forward, "127.0.0.1"], capture_output=True, text=True, timeout=20)


def test_cancel_and_add_forward_in_a_live_session(gateway, upstream_factory, client_ctx):
    # Proves: cancel-tcpip-forward removes just that endpoint (its name answers 112 and is free
    # again), and a tcpip-forward sent after the command adds a working endpoint to the session.
    a = upstream_factory("http", "a")
    b = upstream_factory("http", "b")
    fa, fb = fwd("app.alice.test", a), fwd("api.alice.test", b)
    t = gateway.tunnel([fa, fb], extra=["-o", "ControlMaster=yes",
                                        "-o", f"ControlPath={gateway.dir / 'cm'}"]).start()
    p = _control(t, "cancel", fa)
    assert p.returncode == 0, p.stderr
    gateway.wait_unrouted("app.alice.test", timeout=5)
    assert https_get(gateway.tls_port, "api.alice.test", client_ctx).body.startswith("hello from b")
    p = _control(t, "forward", fwd("new.alice.test", a))
    assert p.returncode == 0, p.stderr
    gateway.wait_routed("new.alice.test", timeout=10)
    assert https_get(gateway.tls_port, "new.alice.test", client_ctx).body.startswith("hello from a")
    assert t.running()


# ---- a session never sits connected serving nothing (issue 11) -------------------------------

def _body(gateway, name, ctx):
    """The routed upstream's answer for `name`, or "" while nothing serves it."""
    try:
        return https_get(gateway.tls_port, name, ctx, timeout=5).body
    except (OSError, ssl.SSLError):
        return ""


def test_same_key_second_tls_session_waits_then_takes_the_name(gateway, upstream_factory,
                                                               client_ctx):
    # Proves: a second `tls` session of the same key asking for a name its other session holds
    # (an autossh reconnect after a network drop, before the gateway noticed) is told it waits,
    # announces nothing meanwhile, and takes the name the moment the first session goes.
    a, b = upstream_factory("http", "a"), upstream_factory("http", "b")
    first = gateway.tunnel([fwd("app.alice.test", a)]).start()
    second = gateway.tunnel([fwd("app.alice.test", b)])
    second.start(wait=False)
    wait_for(lambda: "waiting for app.alice.test" in second.stderr() or not second.running(), 20,
             "the waiting notice")
    assert second.running() and not second.urls(), second.describe()
    assert _body(gateway, "app.alice.test", client_ctx).startswith("hello from a")
    first.close()
    t0 = time.monotonic()
    second.wait_ready(timeout=10)
    assert time.monotonic() - t0 < 3, second.describe()
    wait_for(lambda: _body(gateway, "app.alice.test", client_ctx).startswith("hello from b"), 5,
             "the name to route to the second session")


def test_same_key_second_dash_n_session_waits_then_takes_the_name(gateway, upstream_factory,
                                                                  client_ctx):
    # Proves: the same with `ssh -N -o ExitOnForwardFailure=yes` (no terminal): the client stays
    # up while it waits (the gateway logs why), then serves the name once the holder leaves.
    a, b = upstream_factory("http", "a"), upstream_factory("http", "b")
    first = gateway.tunnel([fwd("app.alice.test", a)]).start()
    second = gateway.tunnel([fwd("app.alice.test", b)], command=None)
    second.start(wait=False)
    wait_for(lambda: "forward.waiting" in gateway.log_text(), 20, "the gateway to log the wait")
    assert second.running(), second.describe()
    assert _body(gateway, "app.alice.test", client_ctx).startswith("hello from a")
    first.close()
    wait_for(lambda: _body(gateway, "app.alice.test", client_ctx).startswith("hello from b"), 5,
             "the name to route to the -N session")
    assert second.running(), second.describe()


def test_session_with_nothing_to_serve_ends_nonzero(gateway, upstream_factory):
    # Proves: a session whose forwards were all refused when its names were claimed (here: the
    # name is pooled, the rival did not pass --pool, which the forward reply could not know yet)
    # ends with a non-zero exit status, for `-N` (ExitOnForwardFailure can't see a late refusal)
    # and for `tls` (which is told why), instead of staying connected serving nothing.
    a, b = upstream_factory("http", "a"), upstream_factory("http", "b")
    holder = gateway.tunnel([fwd("app.alice.test", a)], command="tls --pool").start()
    for command in (None, "tls"):
        rival = gateway.tunnel([fwd("app.alice.test", b)], command=command)
        rc = rival.run_to_exit(20)
        assert rc != 0, rival.describe()
        if command:
            assert "none of your forwards could be served" in rival.stderr(), rival.describe()
    assert holder.running() and b.accepted == 0


def test_dash_n_routes_after_the_short_grace(gateway, upstream, client_ctx):
    # Proves: an `ssh -N` session's names route within a second of the client starting (the
    # 300 ms grace after login, not the next once-a-second tick), measured over 3 sessions.
    for _ in range(3):
        t0 = time.monotonic()
        t = gateway.tunnel([fwd("app.alice.test", upstream)], command=None)
        t.start(wait=False)
        wait_for(lambda: gateway.routed("app.alice.test"), 10, "the -N name to route",
                 interval=0.01)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.9, f"routed after {elapsed:.2f}s\n{t.describe()}"
        t.close()
        gateway.wait_unrouted("app.alice.test", 5)


def test_sessions_ended_by_the_gateway_exit_nonzero(gateway, upstream):
    # Proves: a `tls` client whose session the gateway ends (here: shutdown) exits non-zero, so
    # autossh and systemd's Restart=on-failure bring it back after a gateway restart.
    t = gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    assert gateway.stop() == 0, gateway.log_text()[-3000:]
    rc = t.wait_exit(15)
    assert rc != 0, t.describe()


def test_identity_is_bound_only_by_a_verified_signature(gateway_factory, keys, upstream, tmp_path):
    # Proves: a key that was only offered (probed: the gateway answered "this key would do") but
    # never signed with gives the session none of its rights. ssh offers dave's key first (its
    # private half is passphrase-protected, so with BatchMode ssh can't sign), then signs with
    # alice's: the session has alice's rights exactly, so dave's name is refused and alice's works.
    dave = tmp_path / "id_dave_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase nobody types",
                    "-C", "dave", "-f", str(dave)], check=True)
    gw = gateway_factory(authorized_keys=(
        f'permitlisten="app.dave.test:443" {dave.with_suffix(".pub").read_text().strip()}\n'
        f'permitlisten="*.alice.test:443" {keys.pub("alice")}\n'))
    t = gw.tunnel([fwd("app.dave.test", upstream), fwd("app.alice.test", upstream)],
                  exit_on_forward_failure=False)
    i = t.args.index("-i")
    t.args[i:i] = ["-i", str(dave)]  # offered first
    t.start(wait=False)
    wait_for(lambda: "app.dave.test" in t.stderr() and t.urls() or not t.running(), 20,
             "the session to come up")
    assert t.urls() == [f"tls://app.alice.test:{gw.tls_port}"], t.describe()
    assert "cannot forward app.dave.test" in t.stderr(), t.describe()
    log = gw.log_text()
    assert 'key="alice"' in log and 'key="dave"' not in log, log[-2000:]
    assert "Server accepts key" in t.log() and "id_dave_locked" in t.log(), t.describe()
