"""The unix-socket sidecar for streaming: a request frame "N SIZE" (4-byte
big-endian length, then the bytes) is answered with N frames of SIZE
bytes, each written as it is made, then an empty frame.  Writes wait
for the socket (drain), the sidecar's backpressure.

Usage: python3 stream_sidecar.py SOCKET_PATH   (prints "listening")
"""

import asyncio
import struct
import sys

from stream_handlers import make_chunks

HEADER = struct.Struct(">I")


async def serve(reader, writer):
    try:
        while True:
            (n,) = HEADER.unpack(await reader.readexactly(4))
            count, chunk = make_chunks(await reader.readexactly(n))
            frame = HEADER.pack(len(chunk))
            for _ in range(count):
                writer.writelines((frame, chunk))
                await writer.drain()
            writer.write(HEADER.pack(0))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(path):
    server = await asyncio.start_unix_server(serve, path)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
