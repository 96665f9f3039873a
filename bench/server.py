"""Run Miandan under gunicorn against a fresh benchmark database, the way production runs it.

- PostgreSQL database `miandan_bench` (dropped, created and migrated by `reset_database`),
- Redis db 14 with key prefix `bench` (only keys under that prefix are ever deleted),
- `MIANDAN_SMS_BACKEND=fixed` / `MIANDAN_FIXED_OTP=246810`, DEBUG off, log level WARNING,
- gunicorn `miandan.wsgi` on 127.0.0.1:<port> (gthread workers by default: keep-alive works).

Command line (foreground server, Ctrl-C to stop):

    .venv/bin/python bench/server.py serve --port 8765 --reset
    .venv/bin/python bench/server.py reset                 # just recreate + migrate the database
    .venv/bin/python bench/server.py call bench.engine:prepare '{"fresh": 100}'   # run code with Django set up

From Python (what `bench/engine.py` does):

    from bench.server import BenchConfig, Server, reset_database, django_call
    cfg = BenchConfig(port=8765)
    reset_database(cfg)
    data = django_call(cfg, "bench.engine:prepare", {"fresh": 20000})   # JSON in, JSON out
    with Server(cfg):
        ...  # run bench/loadgen.py against cfg.url

Everything is overridable through BenchConfig or the BENCH_* environment variables
(BENCH_DATABASE_URL, BENCH_REDIS_URL, BENCH_PORT, BENCH_WORKERS, BENCH_THREADS, BENCH_WORKER_CLASS).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
_VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.executable).parent
PYTHON = str(_VENV_BIN / "python")
GUNICORN = str(_VENV_BIN / "gunicorn")


@dataclass
class BenchConfig:
    port: int = int(os.environ.get("BENCH_PORT", "8765"))
    database_url: str = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/miandan_bench")
    redis_url: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    redis_prefix: str = os.environ.get("BENCH_REDIS_PREFIX", "bench")
    celery_queue: str = os.environ.get("BENCH_CELERY_QUEUE", "bench")
    # 0 / "": what gunicorn.conf.py says (the production shape); set them to compare other shapes.
    workers: int = int(os.environ.get("BENCH_WORKERS", "0"))
    threads: int = int(os.environ.get("BENCH_THREADS", "0"))
    worker_class: str = os.environ.get("BENCH_WORKER_CLASS", "")
    fixed_otp: str = "246810"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "miandan.settings",
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "REDIS_KEY_PREFIX": self.redis_prefix,
                "CELERY_BROKER_URL": self.redis_url,
                "CELERY_DEFAULT_QUEUE": self.celery_queue,
                "MIANDAN_SMS_BACKEND": "fixed",
                # What allows the fixed SMS backend with DEBUG off (load tests only, never production).
                "MIANDAN_LOAD_TEST": "1",
                "MIANDAN_FIXED_OTP": self.fixed_otp,
                "DJANGO_DEBUG": "0",
                "LOG_LEVEL": "WARNING",
                "CONN_MAX_AGE": "600",
            }
        )
        env.pop("MIANDAN_TEST_DB_NAME", None)
        env.update(self.extra_env)
        return env


def _admin_dsn(database_url: str) -> tuple[str, str]:
    """DSN of the `postgres` maintenance database on the same server, and the bench database name."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    return urlunsplit(parts._replace(path="/postgres")), name


def reset_database(cfg: BenchConfig) -> None:
    """Drop and recreate the bench database, migrate it, and delete the bench Redis keys."""
    import psycopg

    if "bench" not in urlsplit(cfg.database_url).path:
        raise SystemExit(f"refusing to drop a database whose name lacks 'bench': {cfg.database_url}")
    admin, name = _admin_dsn(cfg.database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=cfg.env(), check=True)
    flush_redis_prefix(cfg)


def flush_redis_prefix(cfg: BenchConfig) -> int:
    """Delete only keys under the bench prefix (the Redis server is shared)."""
    import redis

    client = redis.Redis.from_url(cfg.redis_url)
    keys = list(client.scan_iter(match=f"{cfg.redis_prefix}:*", count=5000))
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i : i + 5000])
    return len(keys)


def manage(cfg: BenchConfig, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=cfg.env(), check=check,
                          capture_output=True, text=True)


def django_call(cfg: BenchConfig, target: str, kwargs: dict | None = None) -> object:
    """Run `module:function(**kwargs)` in a subprocess with Django set up on the bench settings.

    The function's return value must be JSON-serialisable; it comes back parsed.
    """
    proc = subprocess.run(
        [PYTHON, str(Path(__file__).resolve()), "call", target, json.dumps(kwargs or {})],
        cwd=ROOT, env=cfg.env(), capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{target} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Server:
    """gunicorn in a child process for the duration of a `with` block."""

    def __init__(self, cfg: BenchConfig, *, log_path: str | Path | None = None, app: str = "miandan.wsgi",
                 port: int | None = None) -> None:
        self.cfg = cfg
        self.app = app
        self.port = port or cfg.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = (Path(log_path) if log_path
                         else Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-gunicorn-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.health_path = "/floor/get" if app.startswith("bench.floor") else "/healthz"

    def command(self) -> list[str]:
        cfg = self.cfg
        # The production command: gunicorn reads ./gunicorn.conf.py (cwd is the repository root); only what a
        # comparison asks for is overridden.
        cmd = [GUNICORN, self.app, "-b", f"127.0.0.1:{self.port}", "--log-level", "warning", "--graceful-timeout", "5"]
        if cfg.workers:
            cmd += ["-w", str(cfg.workers)]
        if cfg.worker_class:
            cmd += ["--worker-class", cfg.worker_class]
        if cfg.threads and cfg.worker_class in ("", "gthread"):
            cmd += ["--threads", str(cfg.threads)]
        return cmd

    def __enter__(self) -> Server:
        self._log = open(self.log_path, "w")  # closed in __exit__
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, env=self.cfg.env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early, see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not answer /healthz within 30 s, see {self.log_path}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: gunicorn master and its workers
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def _call_main(target: str, kwargs_json: str) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
    django.setup()
    module_name, func_name = target.split(":")
    result = getattr(importlib.import_module(module_name), func_name)(**json.loads(kwargs_json))
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run gunicorn in the foreground")
    serve.add_argument("--port", type=int, default=BenchConfig.port)
    serve.add_argument("--workers", type=int, default=BenchConfig.workers)
    serve.add_argument("--threads", type=int, default=BenchConfig.threads)
    serve.add_argument("--worker-class", default=BenchConfig.worker_class)
    serve.add_argument("--reset", action="store_true", help="recreate and migrate the bench database first")
    sub.add_parser("reset", help="recreate and migrate the bench database")
    call = sub.add_parser("call", help="run module:function(**json) with Django set up (bench settings)")
    call.add_argument("target")
    call.add_argument("kwargs", nargs="?", default="{}")
    args = parser.parse_args(argv)

    if args.cmd == "call":
        _call_main(args.target, args.kwargs)
        return 0
    cfg = BenchConfig()
    if args.cmd == "reset":
        reset_database(cfg)
        return 0
    cfg.port, cfg.workers, cfg.threads, cfg.worker_class = args.port, args.workers, args.threads, args.worker_class
    if args.reset:
        reset_database(cfg)
    with Server(cfg) as server:
        print(f"serving {cfg.url} ({' '.join(server.command())}); log: {server.log_path}", flush=True)
        try:
            server.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
