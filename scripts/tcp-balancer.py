#!/usr/bin/env python3
"""A TCP load balancer for the tests: several `fieldsync-server serve` processes behind one port.

    tcp-balancer.py PORT...     listens on a free loopback port and prints "listening on PORT";
                                each connection goes to a backend picked at random, the next one
                                if that one refuses (a process killed or restarting). TLS passes
                                through untouched: the processes share one certificate.
"""
import asyncio
import random
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer, backends):
    for port in random.sample(backends, len(backends)):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
        return
    client_writer.close()


async def main():
    backends = [int(p) for p in sys.argv[1:]]
    if not backends:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    server = await asyncio.start_server(lambda r, w: handle(r, w, backends), "127.0.0.1", 0)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
