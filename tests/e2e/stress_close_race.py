"""An admin DELETE racing the gateway's own teardown of the same session (issue 16, item 8): the
client disconnecting, or its key being removed, at the same moment as DELETE /api/sessions/ID.
Before the close path had one owner, the DELETE's message could be written to the session
channel after ssh_disconnect had freed it (valgrind: invalid read in write_user after
finish_close, 1 round in 6); ASan can't see it, as the memory is libssh's. So this runs the
release binary under valgrind (memcheck) for a bounded number of rounds and asserts valgrind
found no error and the gateway stayed up.

Slow (valgrind runs the gateway ~30x slower, ~1 s a round here): a `stress` test, 20 rounds
at the CI scale and 50 at full scale; skipped when valgrind is missing or on a sanitizer build (they don't mix)."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time

import pytest

from conftest import SNIGATE_BIN, fwd, wait_for
from stress_ssh_floods import Hostile
from stresslib import SANITIZED, figures, scaled  # noqa: F401

NAME = "app.alice.test"
VALGRIND = shutil.which("valgrind")
# (DELETE's delay, the teardown's delay) in seconds: together, and each first by 1 or 4 ms.
OFFSETS = [(0, 0), (0, 0.001), (0.001, 0), (0, 0.004), (0.004, 0)]

pytestmark = pytest.mark.skipif(VALGRIND is None or SANITIZED,
                                reason="needs valgrind and a build without sanitizers")


def under_valgrind(gateway_factory, tmp_path):
    """A gateway run by valgrind. Its host keys are made first by a normal run, so valgrind
    doesn't spend a minute generating RSA-3072."""
    state = tmp_path / "state"
    gateway_factory(state_dir=state).stop()
    gw = gateway_factory(state_dir=state, admin_listen="127.0.0.1:0", start=False)
    log = gw.dir / "valgrind.log"
    plain = gw.command

    def command():
        cmd = plain()
        assert cmd[0] == SNIGATE_BIN
        return [VALGRIND, "--tool=memcheck", "--error-exitcode=99", "--track-origins=no",
                f"--log-file={log}", *cmd]
    gw.command = command
    return gw.start(), log


DELETERS = 4


def delete_until_gone(gw, sid: int, answers: dict, most: int = 400) -> None:
    for _ in range(most):
        status = gw.admin("DELETE", f"/api/sessions/{sid}?message=race").status
        with LOCK:
            answers[status] = answers.get(status, 0) + 1
        if status == 404:
            return


LOCK = threading.Lock()


def session_id(gw, deadline: float = 30.0) -> int:
    def one():
        sessions = [s for s in gw.admin("GET", "/api/sessions").json()["sessions"]
                    if s["state"] == "active"]
        return sessions[0]["id"] if len(sessions) == 1 else None
    return wait_for(one, deadline, "the tunnel's session in /api/sessions")


def test_admin_delete_racing_the_gateways_own_teardown_under_valgrind(gateway_factory, upstream,
                                                                      keys, tmp_path, figures):
    # Proves: DELETE /api/sessions/ID sent (from 4 clients, until it answers 404) at the same
    # moment as the session ends on its own
    # (the ssh client killed, or its key removed and SIGHUP) never touches freed memory
    # (valgrind: 0 errors) and never takes the gateway down, in every order the race produces.
    rounds = scaled(full=50, ci=20)
    gw, log = under_valgrind(gateway_factory, tmp_path)
    keys_text = gw.authorized_keys.read_text()
    without_alice = "".join(line + "\n" for line in keys_text.splitlines()
                            if gw.keys.pub("alice").split()[1] not in line)
    answers = {}
    for r in range(rounds):
        t = gw.tunnel([fwd(NAME, upstream)]).start(wait=False)
        t.wait_ready(timeout=60)
        sid = session_id(gw)
        how = ("client_killed", "key_removed")[r % 2]
        # Who goes first, and by how much, in turn (the race's offsets, not synchronisation).
        delete_after, teardown_after = OFFSETS[(r // 2) % len(OFFSETS)]

        def teardown():
            time.sleep(teardown_after)
            if how == "client_killed":
                t.kill(signal.SIGKILL)
            else:
                gw.authorized_keys.write_text(without_alice)
                gw.proc.send_signal(signal.SIGHUP)
        racer = threading.Thread(target=teardown)
        # DELETEs from several clients until the session is gone: each one that finds it posts
        # a close to its thread, so some land while (or just after) it tears itself down.
        deleters = [threading.Thread(target=delete_until_gone, args=(gw, sid, answers))
                    for _ in range(DELETERS)]
        racer.start()
        time.sleep(delete_after)
        for d in deleters:
            d.start()
        racer.join(10)
        for d in deleters:
            d.join(30)
        wait_for(lambda: not any(s["id"] == sid
                                 for s in gw.admin("GET", "/api/sessions").json()["sessions"]),
                 30, f"session {sid} to be gone")
        t.close()
        if how == "key_removed":
            reloads = gw.log_text().count("keys.reload path=")
            gw.authorized_keys.write_text(keys_text)
            gw.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: gw.log_text().count("keys.reload path=") > reloads, 30,
                     "authorized_keys to be reloaded with alice back")
        assert gw.running(), f"the gateway died in round {r}"
    # The other teardown: a client that ignores the close (paramiko, which answers the channel
    # close but never disconnects) is disconnected by the gateway after the 5 s linger, with
    # ssh_disconnect, which frees the session's channels while the session lives on; DELETEs
    # keep coming across that moment.
    lingering = scaled(full=4, ci=2)
    for r in range(lingering):
        h = Hostile(gw.ssh_port)
        h.auth(keys.path("alice"))
        h.t.request_port_forward(f"linger{r}.alice.test", 443)
        h.t.open_session().exec_command("tls")
        sid = session_id(gw)
        assert gw.admin("DELETE", f"/api/sessions/{sid}?message=linger").status == 204
        t0 = time.monotonic()
        time.sleep(4.5)  # the close linger is 5 s: start hammering just before it ends
        deleters = [threading.Thread(target=delete_until_gone, args=(gw, sid, answers))
                    for _ in range(DELETERS)]
        for d in deleters:
            d.start()
        for d in deleters:
            d.join(30)
        lingered = time.monotonic() - t0
        h.close()
        assert gw.running(), f"the gateway died in lingering round {r}"
    healthy = gw.admin("GET", "/healthz").status == 200
    rc = gw.stop()
    text = log.read_text(errors="replace")
    m = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
    errors = int(m[-1]) if m else -1
    invalid = len(re.findall(r"Invalid (read|write)", text))
    figures("rounds (DELETE racing a kill or a key removal), under valgrind", rounds, "")
    figures("rounds where the gateway disconnects a lingering client, DELETEs across it",
            lingering, "")
    figures("lingering session gone after", lingered, "s", "5-7", 5 <= lingered <= 7)
    figures("DELETE answers", " ".join(f"{k}x{v}" for k, v in sorted(answers.items())), "")
    figures("valgrind errors", errors, "", "= 0", errors == 0)
    figures("invalid reads or writes", invalid, "", "= 0", invalid == 0)
    figures("gateway healthy after, exit status", f"{int(healthy)}, {rc}", "", "1, 0",
            healthy and rc == 0)
    assert errors == 0 and invalid == 0, text[-4000:]
    assert healthy and rc == 0 and 5 <= lingered <= 7
