"""The classic alternative to nbffi: handlers.echo in a separate Python
process, on an asyncio unix stream socket server.  Each request and reply
is a frame of a 4-byte big-endian length and that many bytes (the framing
of bench/go/sidecar); connections stay open, one frame at a time each.

Usage: python3 sidecar.py SOCKET_PATH   (prints "listening" when ready)
"""

import asyncio
import struct
import sys

import handlers

HEADER = struct.Struct(">I")


async def serve(reader, writer):
    try:
        while True:
            (n,) = HEADER.unpack(await reader.readexactly(4))
            reply = handlers.echo(await reader.readexactly(n))
            writer.writelines((HEADER.pack(len(reply)), reply))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(path):
    # a backlog for wrk's bursts of new connections (c=200)
    server = await asyncio.start_unix_server(serve, path, backlog=1024)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
