"""Routing through real `ssh -R` tunnels: round trips with verification, precedence, several -R,
-N sessions, generated hostnames (DESIGN sections 1, 3 and 4)."""

import re

from conftest import (ALERT_UNRECOGNIZED_NAME, curl_get, fwd, https_get, is_alert, s_client_get)


def test_round_trip_python_client_verifies_upstream_cert(gateway, upstream, client_ctx):
    # Proves: a TLS client reaching the public port for app.alice.test gets the user's own upstream
    # (its certificate verifies against the test CA for that name), and the banner shows the URL.
    t = gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    assert t.urls() == [f"tls://app.alice.test:{gateway.tls_port}"], t.stdout()
    line = next(l for l in t.stdout().splitlines() if "Forwarding" in l)
    assert line.startswith("snigate: Forwarding tls://app.alice.test:") and "TLS passes through" in line, line
    answer = https_get(gateway.tls_port, "app.alice.test", client_ctx)
    assert answer.status == 200
    assert answer.body == "hello from upstream sni=app.alice.test\n"
    assert "app.alice.test" in answer.peer_cert_san
    assert upstream.server_names[-1] == "app.alice.test"


def test_round_trip_curl_resolve(gateway, upstream, pki):
    # Proves: the README's `curl --resolve NAME:PORT:127.0.0.1 --cacert CA https://NAME:PORT/` works.
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    p = curl_get(gateway.tls_port, "app.alice.test", pki.ca)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello from upstream sni=app.alice.test\n"


def test_round_trip_openssl_s_client(gateway, upstream, pki):
    # Proves: openssl s_client with -verify_return_error and -verify_hostname completes through the tunnel.
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    p = s_client_get(gateway.tls_port, "app.alice.test", pki.ca)
    assert p.returncode == 0, p.stderr
    assert "Verification: OK" in p.stderr, p.stderr
    assert "hello from upstream sni=app.alice.test" in p.stdout, p.stdout


def test_sni_is_case_insensitive(gateway, upstream, client_ctx):
    # Proves: names compare case-insensitively (SNI APP.Alice.TEST reaches app.alice.test).
    gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    answer = https_get(gateway.tls_port, "APP.Alice.TEST", client_ctx)
    assert answer.body.startswith("hello from upstream")


def test_wildcard_vs_exact_precedence(gateway, upstream_factory, client_ctx):
    # Proves: the exact name beats a wildcard, the most specific wildcard beats a shorter one, and a
    # wildcard matches at any depth; each session reaches its own upstream.
    wild = upstream_factory("http", "wild")
    wildx = upstream_factory("http", "wildx")
    exact = upstream_factory("http", "exact")
    gateway.tunnel([fwd("*.alice.test", wild)]).start()
    gateway.tunnel([fwd("*.x.alice.test", wildx)]).start()
    gateway.tunnel([fwd("app.alice.test", exact)]).start()
    port = gateway.tls_port

    def who(name):
        return https_get(port, name, client_ctx).body.split()[2]

    assert who("app.alice.test") == "exact"
    assert who("other.alice.test") == "wild"
    assert who("deep.x.alice.test") == "wildx"
    # Not under any of them: refused.
    assert is_alert(gateway.probe("app.bob.test"), ALERT_UNRECOGNIZED_NAME)


def test_several_forwards_in_one_session(gateway, upstream_factory, client_ctx):
    # Proves: each -R of one session is its own endpoint with its own upstream, all in the banner.
    a = upstream_factory("http", "first")
    b = upstream_factory("http", "second")
    t = gateway.tunnel([fwd("app.alice.test", a), fwd("api.alice.test", b)]).start()
    assert sorted(t.urls()) == sorted([f"tls://app.alice.test:{gateway.tls_port}",
                                       f"tls://api.alice.test:{gateway.tls_port}"])
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).body.startswith("hello from first")
    assert https_get(gateway.tls_port, "api.alice.test", client_ctx).body.startswith("hello from second")


def test_dash_n_session_routes(gateway, upstream, client_ctx):
    # Proves: `ssh -N -R ...` (no command, no session channel) is a working endpoint.
    t = gateway.tunnel([fwd("app.alice.test", upstream)], command=None).start()
    assert t.running()
    answer = https_get(gateway.tls_port, "app.alice.test", client_ctx)
    assert answer.body == "hello from upstream sni=app.alice.test\n"


def _generated(gateway, upstream, client_ctx, forward_name, key):
    t = gateway.tunnel([fwd(forward_name, upstream)], key=key).start()
    urls = t.urls()
    assert len(urls) == 1, t.stdout()
    m = re.fullmatch(rf"tls://([a-z0-9][a-z0-9-]*)\.localhost:{gateway.tls_port}", urls[0])
    assert m, f"banner URL {urls[0]!r} is not tls://<label>.localhost:{gateway.tls_port}"
    name = f"{m.group(1)}.localhost"
    upstream.add_names(name)
    answer = https_get(gateway.tls_port, name, client_ctx)
    assert answer.body == f"hello from upstream sni={name}\n"
    return name


def test_generated_hostname_for_no_bind_address(gateway, upstream, client_ctx):
    # Proves: `-R 443:...` (OpenSSH sends bind address "localhost") gets <random>.localhost, shown
    # in the banner with the port, and that name routes to the session's upstream.
    _generated(gateway, upstream, client_ctx, "", "carol")


def test_generated_hostname_for_localhost_bind_address(gateway, upstream, client_ctx):
    # Proves: `-R localhost:443:...` is also "no name": a generated one, routable; and a key with a
    # permitlisten (alice) may still use generated names.
    _generated(gateway, upstream, client_ctx, "localhost", "alice")


def test_generated_hostnames_differ_between_sessions(gateway, upstream_factory, client_ctx):
    # Proves: two sessions asking for a generated name get two different names.
    n1 = _generated(gateway, upstream_factory("http", "upstream"), client_ctx, "", "carol")
    n2 = _generated(gateway, upstream_factory("http", "upstream"), client_ctx, "", "carol")
    assert n1 != n2


def test_key_without_permitlisten_may_bind_under_domain(gateway, upstream, client_ctx):
    # Proves: a key with no permitlisten may bind an explicit name under --domain (demo.localhost).
    t = gateway.tunnel([fwd("demo.localhost", upstream)], key="carol").start()
    assert t.urls() == [f"tls://demo.localhost:{gateway.tls_port}"]
    assert https_get(gateway.tls_port, "demo.localhost", client_ctx).body.startswith("hello from upstream")
