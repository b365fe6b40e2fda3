#!/usr/bin/env python3
"""Stand-in members for poolgate's tcp monitor: listen on PORT at each
ADDRESS, accept and close, so every member stays up for the whole run and
answers do not change half-way. Exits by itself after LIFETIME seconds.

  members.py LIFETIME PORT ADDRESS...
"""
import asyncio
import sys


async def main():
    lifetime, port, addresses = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

    async def accept(_reader, writer):
        writer.close()

    servers = [await asyncio.start_server(accept, address, port, backlog=256) for address in addresses]
    print("ready", flush=True)
    await asyncio.sleep(lifetime)
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
