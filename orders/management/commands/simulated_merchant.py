"""`manage.py simulated_merchant`: the simulated merchant as its own process (orders/simulated_merchant.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.simulated_merchant import Behaviour, Merchant, serve

DEFAULT_CALLBACK = "http://127.0.0.1:8000"


class Command(BaseCommand):
    help = ("Run the simulated merchant on MIANDAN_MERCHANT_URL: it takes orders, and accepts, dispatches and "
            "delivers them on its own clock, calling the platform back with signed events.")

    def add_arguments(self, parser):
        parser.add_argument("--url", default="", help="where to listen (default MIANDAN_MERCHANT_URL)")
        parser.add_argument("--callback-url", default="",
                            help=f"the platform's base URL (default MIANDAN_PUBLIC_BASE_URL, else {DEFAULT_CALLBACK})")
        parser.add_argument("--state", default="",
                            help="its own SQLite file of held orders (default: simulated-merchant-<port>.sqlite3 "
                                 "in the project directory); a restart with the same file resumes every order")
        parser.add_argument("--no-callbacks", action="store_true",
                            help="never call back: the platform learns everything by polling")
        parser.add_argument("--senders", type=int, default=32, help="callbacks in flight at once")

    def handle(self, *args, **opts):
        url = urlsplit(opts["url"] or settings.MIANDAN_MERCHANT_URL)
        if url.scheme != "http" or not url.hostname:
            raise CommandError(f"the simulated merchant listens on http://host:port, not {url.geturl()!r}")
        port = url.port or 80
        callback = opts["callback_url"] or settings.MIANDAN_PUBLIC_BASE_URL or DEFAULT_CALLBACK
        state = Path(opts["state"] or Path(settings.BASE_DIR) / f"simulated-merchant-{port}.sqlite3")
        seed = settings.MIANDAN_MERCHANT_SEED
        behaviour = Behaviour(
            accept=settings.MIANDAN_MERCHANT_ACCEPT_SECONDS, deliver=settings.MIANDAN_MERCHANT_DELIVER_SECONDS,
            reject_rate=settings.MIANDAN_MERCHANT_REJECT_RATE, duplicate_rate=settings.MIANDAN_MERCHANT_DUPLICATE_RATE,
            seed=int(seed) if seed not in (None, "") else None, callbacks=not opts["no_callbacks"],
        )

        def ready(held: int) -> None:
            self.stdout.write(
                f"simulated merchant listening on http://{url.hostname}:{port} (state {state}, {held} held orders "
                f"resumed); accept {behaviour.accept[0]:g}-{behaviour.accept[1]:g} s, deliver "
                f"{behaviour.deliver[0]:g}-{behaviour.deliver[1]:g} s, reject {behaviour.reject_rate:g}, "
                f"duplicates {behaviour.duplicate_rate:g}; "
                + (f"events to {callback}" if behaviour.callbacks else "no callbacks (polling only)"))
            self.stdout.flush()

        async def main() -> None:
            merchant = Merchant(state_path=state, callback_url=callback, secret=settings.MIANDAN_MERCHANT_SECRET,
                                behaviour=behaviour, senders=max(1, opts["senders"]))
            await serve(merchant, url.hostname, port, ready=ready)

        asyncio.run(main())
