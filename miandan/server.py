"""The gunicorn worker of the production shape (gunicorn.conf.py): gthread, plus the time each request was queued.

A gthread worker's main thread hands every readable connection to a thread pool; when all threads are busy the
request waits in the pool's queue, where no application code can see it. This worker stamps the moment a
connection is handed over, and the WSGI environ of its request carries it as `miandan.queued_at` (time.time()),
so admission (miandan/api/guard) knows how long a write already waited inside this process without a proxy in
front. The stamp is the server's own, so unlike a client's X-Request-Start it can be trusted.
"""

from __future__ import annotations

import threading
import time

from gunicorn.workers.gthread import ThreadWorker as GthreadWorker

QUEUED_AT = "miandan.queued_at"


class ThreadWorker(GthreadWorker):
    def init_process(self):
        self._stamp = threading.local()
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        app, stamp = self.wsgi, self._stamp

        def stamped(environ, start_response):
            environ[QUEUED_AT] = getattr(stamp, "queued_at", None)
            return app(environ, start_response)

        self.wsgi = stamped

    def enqueue_req(self, conn):
        conn.miandan_queued_at = time.time()  # main thread: the request joins the pool's queue now
        super().enqueue_req(conn)

    def handle(self, conn):
        self._stamp.queued_at = getattr(conn, "miandan_queued_at", None)  # the pool thread that serves it
        return super().handle(conn)
