"""A test SMS backend: random codes like production, delivered to a list instead of a phone."""

from accounts.sms import ConsoleBackend

OUTBOX: list[tuple[str, str]] = []


class OutboxBackend(ConsoleBackend):
    def send(self, phone: str, code: str) -> None:
        OUTBOX.append((phone, code))


def last_code(phone: str) -> str:
    return next(code for p, code in reversed(OUTBOX) if p == phone)
