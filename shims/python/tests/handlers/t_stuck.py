"""Plain handlers that never return, for the stop tests: the blocking
loop serves them."""

import time


def spin(payload):
    while True:
        pass


def sleep(payload):
    time.sleep(10 ** 6)


def echo(payload):
    return payload
