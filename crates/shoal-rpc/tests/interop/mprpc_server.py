"""msgpack-rpc-python (old msgpack, tornado 4) as a server for a shoal client, for
tests/interop.rs.

Binds 127.0.0.1:0 (the library itself would bind every interface) and prints the port on
stdout. Exits when stdin closes, so it never outlives the test that started it.
"""

import os
import sys
import threading

import msgpackrpc
from msgpackrpc.server import AsyncResult
from msgpackrpc.transport import tcp
from tornado import netutil


class Handler:
    def __init__(self, ioloop):
        self.ioloop = ioloop
        self.notes = []

    def echo(self, x):
        return x

    def slow(self, ms, x):
        result = AsyncResult()
        self.ioloop.call_later(ms / 1000, result.set_result, x)
        return result

    def boom(self):
        raise RuntimeError("boom from msgpack-rpc-python")

    def note(self, i):
        self.notes.append(i)

    def notes_seen(self):
        return self.notes


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    loop = msgpackrpc.Loop()
    server = msgpackrpc.Server(Handler(loop._ioloop), loop=loop, unpack_encoding="utf-8")
    transport = tcp.ServerTransport(msgpackrpc.Address("127.0.0.1", 0), server._encodings)
    transport._server = server
    transport._mp_server = tcp.MessagePackServer(
        transport, io_loop=loop._ioloop, encodings=server._encodings
    )
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    transport._mp_server.add_sockets(sockets)
    server._listeners.append(transport)
    print(sockets[0].getsockname()[1], flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    server.start()


if __name__ == "__main__":
    main()
