"""`python bench/celery_instrumented.py -A miandan worker ...`: a Celery worker whose processes count their work.

The main process (which receives messages) and every pool process write their counters (bench/instrument.py)
under the role `worker`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
    import django

    django.setup()
    from celery.bin.celery import main as celery_main
    from celery.signals import worker_process_init

    from bench.instrument import install

    worker_process_init.connect(lambda **kw: install("worker"), weak=False)
    install("worker-main")
    sys.argv[0] = "celery"
    celery_main()


if __name__ == "__main__":
    main()
