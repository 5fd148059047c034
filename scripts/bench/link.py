"""A TCP relay that shapes everything through it to one link of a given rate (both
directions share it, as on one network interface): scripts/bench-objects.sh puts it between
the worker and moto to measure object sources over a network rather than loopback.

    python3 link.py LISTEN_PORT TARGET_PORT MBIT_PER_S
"""

import asyncio
import sys
import time


class Link:
    def __init__(self, bytes_per_s):
        self.rate = bytes_per_s
        self.free_at = time.monotonic()

    async def send(self, n):
        # Serialises every chunk on the link: each waits until the link has carried the
        # chunks before it.
        now = time.monotonic()
        start = max(now, self.free_at)
        self.free_at = start + n / self.rate
        delay = self.free_at - now
        if delay > 0:
            await asyncio.sleep(delay)


async def pipe(reader, writer, link):
    try:
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                break
            await link.send(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main():
    listen, target, mbit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    link = Link(mbit * 1e6 / 8)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, link), pipe(server_r, client_w, link))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


asyncio.run(main())
