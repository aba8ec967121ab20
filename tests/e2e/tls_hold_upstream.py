"""A TLS upstream that holds many connections cheaply (one asyncio loop, no thread per connection),
for stress_load.py: it completes the handshake, echoes every line it receives and keeps the
connection open until the peer closes it.

    /usr/bin/python3 tls_hold_upstream.py CERT KEY

Listens on 127.0.0.1, port chosen by the kernel, and prints `port=N` on stdout once listening.
Raises its own RLIMIT_NOFILE soft limit to the hard limit. Stops on SIGTERM/SIGINT, or when its
stdin closes (so it cannot outlive the test that started it).
"""

from __future__ import annotations

import asyncio
import resource
import signal
import ssl
import sys


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()  # no close_notify dance: the peer is gone or going


async def main(cert: str, key: str) -> int:
    fd_limit = raise_fd_limit()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=4096,
                                        ssl_handshake_timeout=120)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # stdin EOF (the test process went away) also stops us.
    stdin_reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin_reader), sys.stdin)

    async def watch_stdin():
        while await stdin_reader.read(4096):
            pass
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    print(f"port={port} fd_limit={fd_limit}", flush=True)
    await stop.wait()
    watcher.cancel()
    server.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
