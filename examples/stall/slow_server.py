"""The slow server of the stall example: answers each connection after a
delay.  Usage: python3 slow_server.py PORT [DELAY_MS]   (default 500)."""

import asyncio
import sys


async def main(port, delay):
    async def answer(reader, writer):
        await asyncio.sleep(delay)
        writer.write(b"slow reply\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port,
                                        backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]),
                     int(sys.argv[2] if len(sys.argv) > 2 else 500) / 1000))
