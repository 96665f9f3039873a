"""The one production server shape. gunicorn reads ./gunicorn.conf.py by default, so `gunicorn miandan.wsgi`,
`make run`, the benchmarks and any outside check all run the same worker class, threads, backlog and timeouts.
The command line (or GUNICORN_CMD_ARGS) still wins for one-off changes; `-b` picks the address.

Why this shape (measured, BENCHMARKS.md; docs/operations.md "The server shape" and "The admission model"):
- gthread (miandan.server.ThreadWorker: gunicorn's, plus a stamp of when a request joined the thread-pool
  queue): the admission limit hands at most `threads - 1` of a worker's threads to running campaign writes,
  and a write waiting for a slot frees its thread within MIANDAN_SHED_MAX_WAIT_MS. A sync worker serves one
  request at a time, and every excess request waits in the kernel's listen backlog where no Python code sees it.
- 2 workers per core: one process's GIL does not cap a core, and PostgreSQL's share of the CPU is used.
- 8 threads per worker: at most 7 campaign writes run at once per worker, so at least one thread is left for
  refusals, reads and health checks (a write waiting for a slot may occupy it for at most
  MIANDAN_SHED_MAX_WAIT_MS). Every thread may hold a PostgreSQL connection (CONN_MAX_AGE), so one machine holds
  up to workers x threads = 32 of them on 2 cores: PostgreSQL's max_connections (100 here, shared) or PgBouncer
  bound this shape (measured: 12 threads ran this box out of connections beside the benchmark's floor server).
"""

import os

_cores = os.cpu_count() or 1

# gthread, plus a stamp of when each request joined the worker's thread-pool queue (miandan/server.py): admission
# sees how long a write already waited here, with no proxy in front.
worker_class = "miandan.server.ThreadWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * _cores))
threads = int(os.environ.get("WEB_THREADS", 8))
worker_connections = 1000  # open keep-alive connections per worker (gthread)
backlog = 2048  # the kernel queue of not-yet-accepted connections during a burst
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections over the workers.
# Without it one gthread worker accepts a whole burst of keep-alive connections by itself (measured: all 32
# of a benchmark's connections on one of 4 workers, /healthz 492 req/s against 2,396 with it).
reuse_port = True
keepalive = 75  # above the load balancer's idle timeout (60 s on most), so it never reuses a closed one
timeout = 30  # a worker stuck this long is restarted
graceful_timeout = 30
# No access log by default: one line per request costs CPU at the peak (BENCHMARKS.md); requests are counted
# in /metrics and every 4xx/5xx is logged as JSON by Django. Turn it on with --access-logfile - when needed.
accesslog = None


def post_fork(server, worker):
    import sys

    # The admission limiter sizes itself from the real shape (miandan/api/guard/shedding.py), whichever way
    # it was given (this file, the command line or GUNICORN_CMD_ARGS).
    os.environ["MIANDAN_SERVER_THREADS"] = str(worker.cfg.threads)
    os.environ["MIANDAN_SERVER_WORKERS"] = str(server.cfg.workers)
    # A thread that must wait for the GIL (a refusal, a read behind a busy write) waits at most 1 ms instead of
    # CPython's 5 ms: refusals keep their sub-millisecond server time while writes run in the same process.
    sys.setswitchinterval(float(os.environ.get("WEB_SWITCH_INTERVAL", "0.001")))


def child_exit(server, worker):
    # With PROMETHEUS_MULTIPROC_DIR, a dead worker's live gauges (shed limit, in flight) go with it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
