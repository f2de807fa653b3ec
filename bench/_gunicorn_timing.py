"""Gunicorn hooks for bench_webhook: the CPU time each request used in its worker thread.

Wall time on a shared machine includes waiting for a CPU; CPU time is what the handler
itself costs. One number (seconds) per line goes to the file named by BENCH_CPU_LOG.
"""

import os
import threading
import time

_local = threading.local()


def pre_request(worker, req):
    _local.started = time.thread_time()


def post_request(worker, req, environ, resp):
    used = time.thread_time() - getattr(_local, "started", time.thread_time())
    line = f"{used:.6f}\n".encode()
    fd = os.open(os.environ["BENCH_CPU_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
