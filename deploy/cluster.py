"""The production topology on one machine: `make cluster` / `make cluster-stop` (docs/operations.md "The cluster").

    nginx (CLUSTER_PORT, default 8080)  ->  web node 1 (gunicorn master, gunicorn.conf.py)
                                        ->  web node 2 (gunicorn master)
    web, workers, beat  ->  PgBouncer (transaction pooling)  ->  PostgreSQL (its own database)
                        ->  Redis Cluster (3 masters + 3 replicas; admission, capacity, rate limits, cache)
                        ->  RabbitMQ (the Celery broker)
    two Celery worker nodes, one beat, the simulated merchant (callbacks through nginx)

Every process is started here, on its own free port, with its pid in the runtime directory (CLUSTER_DIR,
default ./.cluster); `stop` signals only those pids. Standard library only, so it runs before the venv
matters; the Django processes run from the venv (.venv/bin). The same component classes start the pieces
the tests need (tests/servers.py: a Redis Cluster, PgBouncer, nginx).

    python deploy/cluster.py start [--no-seed]     # prints the URL and writes CLUSTER_DIR/env
    python deploy/cluster.py stop
    python deploy/cluster.py status
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("VENV", ROOT / ".venv")) / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too (and below 65536)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        if all(_bindable(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def wait_port(port: int, proc: subprocess.Popen | None = None, seconds: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not answers(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or port} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what or port} does not answer on 127.0.0.1:{port}")
        time.sleep(0.05)


def find_binary(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install {name}; `make cluster` does it)")
    return path


def _drop_to() -> str | None:
    """The user a daemon that refuses root (PgBouncer) runs as, when we are root."""
    if os.geteuid() != 0:
        return None
    for user in ("nobody", "postgres"):
        try:
            import pwd

            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    return None


def writable_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        path.chmod(0o777)  # the dropped-privilege worker processes write logs and temp files here
    return path


# --- Redis Cluster ---------------------------------------------------------------------------------------

class RedisClusterProcs:
    """`masters` redis-server processes with --cluster-enabled yes (+ `replicas` per master), joined by
    `redis-cli --cluster create`. `url` is a `redis+cluster://` URL listing every master (any one of them
    is enough to discover the rest; several let a client start while one is down)."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000,
                 ports: list[int] | None = None) -> None:
        self.dir = writable_dir(directory)
        self.masters, self.replicas = masters, replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = ports or [free_cluster_port() for _ in range(masters * (1 + replicas))]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:self.masters])

    def _start_node(self, port: int) -> subprocess.Popen:
        node_dir = writable_dir(self.dir / str(port))
        proc = subprocess.Popen(
            [find_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
             "--cluster-node-timeout", str(self.node_timeout_ms),
             # A dead master's slots are refused, not the whole cluster's: the other campaigns keep their counters.
             "--cluster-require-full-coverage", "no",
             "--cluster-replica-validity-factor", "0",  # a replica may always take over (counters, not money)
             "--shutdown-timeout", "0", "--dir", str(node_dir), "--save", "", "--appendonly", "no",
             "--logfile", str(node_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.procs[port] = proc
        return proc

    def start(self) -> None:
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            wait_port(port, self.procs[port], what=f"redis-server {port}")
        create = subprocess.run(
            [find_binary("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout[-2000:]}{create.stderr[-2000:]}")
        self.wait_ok()

    def info(self, port: int) -> str:
        out = subprocess.run([find_binary("redis-cli"), "-p", str(port), "cluster", "info"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout

    def slots_served(self, port: int) -> bool:
        """In `port`'s view, every master that holds slots is connected and not failing."""
        out = subprocess.run([find_binary("redis-cli"), "-p", str(port), "cluster", "nodes"],
                             capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 9 and "master" in fields[2]:  # fields[8:] are its slot ranges
                if "fail" in fields[2] or fields[7] != "connected":
                    return False
        return bool(out)

    def wait_ok(self, seconds: float = 30) -> None:
        """Every live node says cluster_state:ok, all 16384 slots are served, and by live masters (after a
        master is stopped this waits for its replica's promotion)."""
        deadline = time.monotonic() + seconds
        while True:
            live = [p for p, proc in self.procs.items() if proc.poll() is None]
            infos = [self.info(p) for p in live]
            if (infos and all("cluster_state:ok" in i and "cluster_slots_ok:16384" in i for i in infos)
                    and all(self.slots_served(p) for p in live)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis cluster not ok:\n" + "\n".join(infos))
            time.sleep(0.1)

    def master_ports(self) -> list[int]:
        """Ports of the nodes that are masters now (after a failover, a former replica is one)."""
        result = []
        for port, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            out = subprocess.run([find_binary("redis-cli"), "-p", str(port), "role"], capture_output=True,
                                 text=True, timeout=5).stdout
            if out.startswith("master"):
                result.append(port)
        return result

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[port]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- PgBouncer -------------------------------------------------------------------------------------------

class PgBouncerProc:
    """PgBouncer in transaction pooling on its own port, in front of PostgreSQL (trust, as the local server)."""

    def __init__(self, directory: Path, *, port: int | None = None, pg_host: str = "127.0.0.1",
                 pg_port: int = 5432, pg_user: str = "postgres", pool_size: int = 20,
                 max_client_conn: int = 500) -> None:
        self.dir = writable_dir(directory)
        self.port = port or free_port()
        self.pg_host, self.pg_port, self.pg_user = pg_host, pg_port, pg_user
        self.pool_size, self.max_client_conn = pool_size, max_client_conn
        self.proc: subprocess.Popen | None = None

    def url(self, database: str) -> str:
        return f"postgres://{self.pg_user}@127.0.0.1:{self.port}/{database}"

    def write_config(self) -> Path:
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(f"""\
[databases]
* = host={self.pg_host} port={self.pg_port} user={self.pg_user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 5
max_client_conn = {self.max_client_conn}
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
; the log goes to stderr (pgbouncer.err here), so a dropped-privilege process needs no writable path
logfile =
pidfile =
admin_users = {self.pg_user}
""")
        ini.chmod(0o644)
        return ini

    def start(self) -> None:
        ini = self.write_config()
        command = [find_binary("pgbouncer")]
        user = _drop_to()
        if user:
            command += ["-u", user]  # PgBouncer refuses to run as root
        self.proc = subprocess.Popen([*command, str(ini)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "pgbouncer.err", "w"), start_new_session=True)
        wait_port(self.port, self.proc, what="pgbouncer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# --- nginx -----------------------------------------------------------------------------------------------

NGINX_CONF = """\
{user_line}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    client_max_body_size 2m;

    # The edge in front of this load balancer may name the client (a CDN; here the load generator):
    # the address it puts in X-Forwarded-For becomes $remote_addr. Without a trusted edge, remove it.
    {realip}

    upstream miandan_web {{
        # A node that refuses or times out is skipped for fail_timeout; passive health checks
        # (active ones are nginx Plus only). /healthz answers without the database.
{servers}
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://miandan_web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # One trusted proxy appends the client address: MIANDAN_PROXY_COUNT=1.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # When the request reached the load balancer: the admission limiter's queue signal.
            proxy_set_header X-Request-Start "t=${{msec}}";
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
            # A dead node (refused, reset, no answer) is retried on the other one. nginx never re-sends a POST
            # that reached a node (non_idempotent is off): a claim is never made twice by the balancer.
            proxy_next_upstream error timeout http_502;
            proxy_next_upstream_tries 2;
            # A node that died with the request on it (502/504): the answer is the API's 503 `busy` with
            # Retry-After. The request may or may not have committed; the client retries with the same
            # Idempotency-Key, which replays a committed write (the record is in PostgreSQL, shared).
            proxy_intercept_errors off;
            error_page 502 504 =503 @node_lost;
        }}
        location @node_lost {{
            default_type application/json;
            add_header Retry-After 1 always;
            return 503 '{{"code": "busy", "detail": "活动太火爆了，请稍后再试", "retry_after": 1}}';
        }}
    }}
}}
"""


class NginxProc:
    def __init__(self, directory: Path, *, port: int, upstreams: list[int], trusted_edge: str = "127.0.0.1") -> None:
        self.dir = writable_dir(directory)
        writable_dir(self.dir / "tmp")
        self.port, self.upstreams, self.trusted_edge = port, upstreams, trusted_edge
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in self.upstreams)
        realip = (f"set_real_ip_from {self.trusted_edge}; real_ip_header X-Forwarded-For; real_ip_recursive on;"
                  if self.trusted_edge else "")
        user_line = "user nobody nogroup;" if os.geteuid() == 0 else ""
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers, realip=realip,
                                          user_line=user_line))
        return conf

    def start(self) -> None:
        conf = self.write_config()
        self.proc = subprocess.Popen([find_binary("nginx"), "-p", str(self.dir), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "nginx.err", "w"),
                                     start_new_session=True)
        wait_port(self.port, self.proc, what="nginx")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- the Django processes --------------------------------------------------------------------------------

def wait_http(url: str, proc: subprocess.Popen, seconds: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} does not answer {url}") from None
            time.sleep(0.2)


def psql(sql: str, database: str = "postgres") -> str:
    """Run SQL against the real PostgreSQL (not PgBouncer) with the stdlib: through psql if present, else psycopg."""
    host, port, user = os.environ.get("PGHOST", "127.0.0.1"), os.environ.get("PGPORT", "5432"), "postgres"
    binary = shutil.which("psql")
    if binary:
        out = subprocess.run([binary, "-h", host, "-p", port, "-U", user, "-d", database, "-tAc", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()
    code = ("import psycopg,sys\nwith psycopg.connect(sys.argv[1],autocommit=True) as c:\n"
            " r=c.execute(sys.argv[2]); print(r.fetchone()[0] if r.description else '')")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", code, f"postgres://{user}@{host}:{port}/{database}", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


def ensure_database(name: str) -> None:
    """Create the cluster's own database once; UTC, so Django never sets a session time zone (PgBouncer)."""
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0":
        psql(f'CREATE DATABASE "{name}"')
    psql(f"ALTER DATABASE \"{name}\" SET timezone TO 'UTC'")


class Cluster:
    """The whole topology; state (ports, pids) in `dir/state.json`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.state_file = directory / "state.json"

    # -- helpers
    def _spawn(self, name: str, command: list[str], env: dict[str, str], state: dict) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "w")
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        state["pids"][name] = proc.pid
        self._save(state)
        return proc

    def _save(self, state: dict) -> None:
        self.state_file.write_text(json.dumps(state, indent=2))

    def load(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def env(self, state: dict) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DATABASE_URL", "REDIS_", "CELERY_", "MIANDAN_TEST_", "PYTEST_"))}
        env.update({
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{state['ports']['pgbouncer']}/{state['database']}",
            "MIANDAN_PGBOUNCER": "1",
            "REDIS_URL": state["redis_url"],
            "REDIS_KEY_PREFIX": state["prefix"],
            "CELERY_BROKER_URL": state["broker"],
            "CELERY_DEFAULT_QUEUE": state["queue"],
            "MIANDAN_PROXY_COUNT": "1",
            "MIANDAN_MERCHANT_URL": f"http://127.0.0.1:{state['ports']['merchant']}",
            "MIANDAN_PUBLIC_BASE_URL": state["url"],
            "MIANDAN_SMS_BACKEND": os.environ.get("MIANDAN_SMS_BACKEND", "fixed"),
            "MIANDAN_FIXED_OTP": os.environ.get("MIANDAN_FIXED_OTP", "246810"),
            # A load-test topology with the fixed SMS code: declared, or gunicorn and the workers refuse to start
            # with DJANGO_DEBUG=0 (miandan.checks.unsafe_to_serve).
            "MIANDAN_LOAD_TEST": os.environ.get("MIANDAN_LOAD_TEST", "1"),
            "WEB_CONCURRENCY": state.get("web_workers", "2"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(state.get("extra_env") or {})
        return env

    # -- start
    def start(self, *, seed: bool = True, migrate: bool = True, redis_replicas: int = 1, port: int | None = None,
              database: str | None = None, prefix: str | None = None, queue: str | None = None,
              web_workers: int | None = None, extra_env: dict[str, str] | None = None) -> dict:
        """Start everything; the keyword arguments override the CLUSTER_* environment (the tests use them)."""
        if (state := self.load()) and any(_alive(pid) for pid in state["pids"].values()):
            raise RuntimeError(f"a cluster is already running from {self.dir} (make cluster-stop)")
        writable_dir(self.dir)
        port = port or int(os.environ.get("CLUSTER_PORT", "8080"))
        if answers(port):
            raise RuntimeError(f"port {port} is taken (set CLUSTER_PORT)")
        web_ports = [free_port(), free_port()]
        state = {
            "dir": str(self.dir), "url": f"http://127.0.0.1:{port}",
            "database": database or os.environ.get("CLUSTER_DATABASE", "miandan_cluster"),
            "prefix": prefix or os.environ.get("CLUSTER_KEY_PREFIX", "miandan-cluster"),
            "queue": queue or os.environ.get("CLUSTER_QUEUE", "miandan-cluster"),
            "broker": os.environ.get("CLUSTER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
            "web_workers": str(web_workers or os.environ.get("CLUSTER_WEB_WORKERS", "2")),
            "extra_env": extra_env or {},
            "ports": {"lb": port, "web1": web_ports[0], "web2": web_ports[1], "merchant": free_port()},
            "pids": {},
        }
        from urllib.parse import urlsplit

        broker = urlsplit(state["broker"])
        if not answers(broker.port or 5672, broker.hostname or "127.0.0.1"):
            raise RuntimeError(f"the broker {broker.hostname}:{broker.port or 5672} does not answer "
                               "(start RabbitMQ: rabbitmq-server -detached, as .ci/run does)")
        try:
            redis = RedisClusterProcs(self.dir / "redis", masters=3, replicas=redis_replicas)
            redis.start()
            state["redis_url"] = redis.url
            state["ports"]["redis"] = redis.ports
            state["pids"].update({f"redis-{p}": proc.pid for p, proc in redis.procs.items()})
            self._save(state)

            ensure_database(state["database"])
            bouncer = PgBouncerProc(self.dir / "pgbouncer", pool_size=int(os.environ.get("CLUSTER_PG_POOL", "20")))
            bouncer.start()
            state["ports"]["pgbouncer"] = bouncer.port
            state["pids"]["pgbouncer"] = bouncer.proc.pid
            self._save(state)

            env = self.env(state)
            py = str(VENV_BIN / "python")
            for step in (["migrate", "--noinput"], ["collectstatic", "--noinput"]) if migrate else ():
                subprocess.run([py, "manage.py", *step], cwd=ROOT, env=env, check=True,
                               stdout=subprocess.DEVNULL)
            if seed:
                subprocess.run([py, "manage.py", "seed_demo"], cwd=ROOT, env=env, check=True)

            webs = []
            for name in ("web1", "web2"):
                node_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(writable_dir(self.dir / f"prom-{name}"))}
                webs.append(self._spawn(name, [str(VENV_BIN / "gunicorn"), "miandan.wsgi", "-b",
                                               f"127.0.0.1:{state['ports'][name]}"], node_env, state))
            for name, proc in zip(("web1", "web2"), webs, strict=True):
                wait_http(f"http://127.0.0.1:{state['ports'][name]}/healthz", proc, what=name)
            for name in ("worker1", "worker2"):
                self._spawn(name, [str(VENV_BIN / "celery"), "-A", "miandan", "worker", "-l", "info",
                                   # Node names unique per cluster: another cluster on the same broker
                                   # would hold the same pidbox queue.
                                   "-n", f"{state['queue']}-{name}@%h",
                                   "--concurrency", os.environ.get("CLUSTER_WORKER_CONCURRENCY", "2"),
                                   "-Q", state["queue"]], env, state)
            self._spawn("beat", [str(VENV_BIN / "celery"), "-A", "miandan", "beat", "-l", "info",
                                 "--schedule", str(self.dir / "beat-schedule")], env, state)

            nginx = NginxProc(self.dir / "nginx", port=port, upstreams=web_ports,
                              trusted_edge=os.environ.get("CLUSTER_TRUSTED_EDGE", "127.0.0.1"))
            nginx.start()
            state["pids"]["nginx"] = nginx.proc.pid
            self._save(state)

            merchant = self._spawn("merchant", [py, "manage.py", "simulated_merchant", "--url",
                                                env["MIANDAN_MERCHANT_URL"], "--callback-url", state["url"],
                                                "--state", str(self.dir / "merchant.sqlite3")], env, state)
            wait_port(state["ports"]["merchant"], merchant, what="simulated merchant")
            wait_http(f"{state['url']}/healthz", nginx.proc, what="load balancer")
        except BaseException:
            self.stop()
            raise
        (self.dir / "env").write_text("".join(f"export {k}={_sh(v)}\n" for k, v in env.items()
                                              if k in ENV_EXPORTS))
        return state

    # -- stop
    def stop(self) -> list[str]:
        state = self.load()
        if state is None:
            return []
        stopped = []
        # Front to back: the balancer first (no new requests), the stores last.
        order = ["nginx", "merchant", "web1", "web2", "beat", "worker1", "worker2", "pgbouncer"]
        names = order + [n for n in state["pids"] if n not in order]
        for name in names:
            pid = state["pids"].get(name)
            if pid is None or not _alive(pid):
                continue
            _signal_group(pid, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
            stopped.append(name)
        deadline = time.monotonic() + 20
        for name in stopped:
            pid = state["pids"][name]
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        state["pids"] = {}
        self._save(state)
        return stopped

    def status(self) -> dict:
        state = self.load() or {"pids": {}}
        return {name: ("up" if _alive(pid) else "down") for name, pid in state["pids"].items()}


ENV_EXPORTS = ("DATABASE_URL", "MIANDAN_PGBOUNCER", "REDIS_URL", "REDIS_KEY_PREFIX", "CELERY_BROKER_URL",
               "CELERY_DEFAULT_QUEUE", "MIANDAN_PROXY_COUNT", "MIANDAN_SMS_BACKEND", "MIANDAN_FIXED_OTP")


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    """Each process was started in its own session: its group is its pid (gunicorn with its workers)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", str(ROOT / ".cluster")))
    parser.add_argument("--no-seed", action="store_true", help="skip seed_demo")
    parser.add_argument("--redis-replicas", type=int, default=int(os.environ.get("CLUSTER_REDIS_REPLICAS", "1")))
    args = parser.parse_args(argv)
    cluster = Cluster(Path(args.dir).resolve())
    if args.command == "start":
        state = cluster.start(seed=not args.no_seed, redis_replicas=args.redis_replicas)
        p = state["ports"]
        print(f"""
  Miandan cluster:   {state['url']}/   (nginx -> web nodes :{p['web1']} and :{p['web2']})
  PgBouncer:         127.0.0.1:{p['pgbouncer']} (transaction pooling) -> PostgreSQL 127.0.0.1:5432/{state['database']}
  Redis Cluster:     {state['redis_url']} (+ {args.redis_replicas} replica(s) per master)
  Broker:            {state['broker']} queue {state['queue']}; workers worker1, worker2; beat
  Merchant:          http://127.0.0.1:{p['merchant']} (simulated)
  Logs and pids:     {state['dir']}
  Environment:       source {state['dir']}/env   (then e.g. python manage.py simulate --url {state['url']})
  Stop:              make cluster-stop
""")
    elif args.command == "stop":
        stopped = cluster.stop()
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
    else:
        print(json.dumps(cluster.status(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
