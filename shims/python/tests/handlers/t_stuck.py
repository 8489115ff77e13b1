"""Plain handlers that never return, for the stop tests: the blocking
loop serves them."""

import logging
import time

log = logging.getLogger("t_stuck")


def spin(payload):
    log.info("spin: started")
    while True:
        pass


def sleep(payload):
    log.info("sleep: started")
    time.sleep(10 ** 6)


def echo(payload):
    return payload
