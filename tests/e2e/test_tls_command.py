"""The session command: `tls` and what it refuses (DESIGN section 3). Each refusal is a message on
the session's stderr and exit status 1, and leaves nothing routable."""

import pytest

from conftest import ALERT_UNRECOGNIZED_NAME, fwd, https_get, is_alert

PASSTHROUGH = "not supported over SSH: TLS passes through to your upstream"
TLS_ONLY = "not supported: this gateway serves TLS endpoints"
UNKNOWN = "unknown option"

REFUSED = [
    ("tls --terminate-at edge", "--terminate-at", PASSTHROUGH),
    ("tls --terminate-at agent", "--terminate-at", PASSTHROUGH),
    ("tls --crt x", "--crt", PASSTHROUGH),
    ("tls --key x", "--key", PASSTHROUGH),
    ("tls --upstream-proxy-protocol", "--upstream-proxy-protocol", PASSTHROUGH),
    ("tls --proxy-proto", "--proxy-proto", PASSTHROUGH),
    ("tls --traffic-policy-file x", "--traffic-policy-file", PASSTHROUGH),
    ("http", "http", TLS_ONLY),
    ("tcp", "tcp", TLS_ONLY),
    ("tls --no-such-option", "--no-such-option", UNKNOWN),
]


@pytest.mark.parametrize("command,names,message", REFUSED, ids=[c for c, _, _ in REFUSED])
def test_refused_command(gateway, upstream, command, names, message):
    # Proves: this command is refused with the contract's message naming it, exit status 1, and the
    # session's forward does not stay routable.
    t = gateway.tunnel([fwd("app.alice.test", upstream)], command=command)
    rc = t.run_to_exit()
    assert rc == 1, t.describe()
    err = t.stderr()
    assert message in err, t.describe()
    assert names in err, t.describe()
    assert is_alert(gateway.probe("app.alice.test"), ALERT_UNRECOGNIZED_NAME)
    assert upstream.accepted == 0, "a refused session's endpoint must never have been routed"


def test_no_command_is_the_same_as_tls(gateway, upstream, client_ctx):
    # Proves: `ssh -R ... host` with no command (a shell request) behaves like `tls`: banner, routing.
    t = gateway.tunnel([fwd("app.alice.test", upstream)], command="").start()
    assert t.urls() == [f"tls://app.alice.test:{gateway.tls_port}"]
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200


def test_tls_session_stays_up_without_traffic(gateway, upstream, client_ctx):
    # Proves: a `tls` session stays up with no traffic (it is not a one-shot command).
    t = gateway.tunnel([fwd("app.alice.test", upstream)]).start()
    assert t.proc.poll() is None
    assert https_get(gateway.tls_port, "app.alice.test", client_ctx).status == 200
    assert t.running()
