"""aio-msgpack-rpc as a server for a shoal client, for tests/interop.rs.

Binds 127.0.0.1:0 and prints the port on stdout. Exits when stdin closes, so it never
outlives the test that started it.
"""

import asyncio
import os
import sys
import threading

import aio_msgpack_rpc


class Handler:
    def __init__(self):
        self.notes = []

    def echo(self, x):
        return x

    async def slow(self, ms, x):
        await asyncio.sleep(ms / 1000)
        return x

    def boom(self):
        raise RuntimeError("boom from aio")

    def note(self, i):
        self.notes.append(i)

    def notes_seen(self):
        return self.notes


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


async def main():
    server = await asyncio.start_server(aio_msgpack_rpc.Server(Handler()), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
