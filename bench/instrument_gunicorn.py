"""gunicorn config for benchmarks: count SQL statements, requests and CPU per worker (bench/instrument.py)."""


def post_fork(server, worker):
    import django

    django.setup()
    from bench.instrument import install

    install("web")
