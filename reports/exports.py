"""Render the budget report and the full ledger as CSV (streamed) and XLSX (openpyxl write-only).

CSV starts with a UTF-8 BOM so that Excel opens the Chinese headers correctly. XLSX money
cells carry the number format '#,##0.00' and hold exact Decimals. Both writers consume
row iterators, so memory stays bounded whatever the number of rows.

Formula injection (CSV/XLSX opened by finance in Excel): any text cell that starts with = + - @ tab or CR is
written with a leading apostrophe in CSV (`neutralise`, and the same rule in SQL for the COPY path:
selectors.ledger_copy_sql); XLSX text cells are always typed as strings, so Excel never evaluates them.
Numbers (money, counts) are not text and keep their sign.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import IO, TYPE_CHECKING

from orders.models import Order
from vouchers.models import Voucher

from .selectors import LEDGER_COLUMNS, SHANGHAI, SUMMARY_LABELS, BudgetReport

if TYPE_CHECKING:
    from openpyxl.cell import WriteOnlyCell

# openpyxl (about 20 MB resident) is imported where an XLSX is written, not with this module: the web and
# Celery processes that import the reports app for its CSV paths and tasks must not carry it (issue 12's
# worker RSS budget); the first XLSX in a process pays the import once.

BOM = "\ufeff"
MONEY_FORMAT = "#,##0.00"
INT_FORMAT = "#,##0"
# Column widths (Excel characters; a CJK character counts about two) so no figure shows as ####.
WIDTHS = {"money": 20, "int": 12, "str": 16}
WIDE = {"created_at": 21, "reason": 30, "voucher": 16, "holder": 16, "day": 12, "brand": 14, "city": 10}
SOURCE_LABELS = dict(Voucher.Source.choices)
CARD_STATE_LABELS = dict(Voucher.Status.choices)
ORDER_STATE_LABELS = dict(Order.Status.choices)
Progress = Callable[[int], None]


class _Echo:
    """A file-like object whose write() returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """A text value Excel would run as a formula gets a leading apostrophe; anything else is returned as is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, str):
        return neutralise(value)
    return str(value)


def report_sections(report: BudgetReport) -> list[tuple[str, list[tuple[str, object, str]]]]:
    """The fixed-size part of the report: (section title, [(label, value, kind)])."""
    s = report.summary
    return [
        ("指标", [(SUMMARY_LABELS[k], v, "money" if isinstance(v, Decimal) else "int") for k, v in s.items()]),
        ("发卡来源", [(SOURCE_LABELS[k], v, "int") for k, v in report.cards_by_source.items()]),
        ("卡状态", [(CARD_STATE_LABELS[k], v, "int") for k, v in report.cards_by_state.items()]),
        ("订单状态", [(ORDER_STATE_LABELS[k], v, "int") for k, v in report.orders_by_state.items()]),
    ]


def _header_lines(report: BudgetReport) -> list[list[str]]:
    c = report.campaign
    return [
        ["预算报表", c.name, c.slug],
        ["生成时间（北京时间）", report.generated_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")],
        ["货币", "人民币（元）"],
    ]


def _reconciliation_lines(report: BudgetReport) -> list[list[str]]:
    rec = report.reconciliation
    lines = [["对账结果", "PASS" if rec.ok else "FAIL"]]
    lines += [["差异", diff] for diff in rec.differences]
    return lines


def budget_report_csv(report: BudgetReport) -> Iterator[str]:
    """Yield the report as CSV text chunks: header, sections, grouped rows (streamed), reconciliation."""
    writer = csv.writer(_Echo())
    yield BOM
    for line in _header_lines(report):
        yield writer.writerow([neutralise(v) for v in line])
    for title, items in report_sections(report):
        yield writer.writerow([])
        yield writer.writerow([title, "数值"])
        for label, value, _kind in items:
            yield writer.writerow([label, _cell_text(value)])
    yield writer.writerow([])
    yield writer.writerow([f"分组明细（按{GROUP_TITLES[report.group_by]}）"])
    yield writer.writerow([col.label for col in report.columns])
    for row in report.rows():
        yield writer.writerow([_cell_text(row[col.key]) for col in report.columns])
    yield writer.writerow([])
    for line in _reconciliation_lines(report):
        yield writer.writerow([neutralise(v) for v in line])


GROUP_TITLES = {"day": "日期", "brand": "品牌", "city": "城市"}


def _text_cell(ws, value) -> WriteOnlyCell:
    """openpyxl types a str starting with "=" as a formula: force the string type."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value=value)
    cell.data_type = "s"
    return cell


def _x(ws, value):
    """A plain xlsx value, except text that openpyxl would turn into a formula."""
    return _text_cell(ws, value) if isinstance(value, str) and value.startswith("=") else value


def _cell(ws, value, kind: str = "str", bold: bool = False) -> WriteOnlyCell:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str):
        cell.data_type = "s"
    if kind == "money" and value is not None:
        cell.number_format = MONEY_FORMAT
    elif kind == "int" and isinstance(value, int):
        cell.number_format = INT_FORMAT
    if bold:
        from openpyxl.styles import Font

        cell.font = Font(bold=True)
    return cell


def _widths(ws, columns) -> None:
    """Write-only sheets take column widths before the first row."""
    from openpyxl.utils import get_column_letter

    for i, col in enumerate(columns, start=1):
        label = len(col.label) * 2 + 2  # the header, in CJK characters
        ws.column_dimensions[get_column_letter(i)].width = max(WIDE.get(col.key, WIDTHS[col.kind]), label)


def budget_report_xlsx(report: BudgetReport, fileobj: IO[bytes]) -> None:
    """Two sheets: 汇总 (figures and reconciliation) and 明细 (grouped rows, streamed)."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("汇总")
    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 24  # 3,000,000,000.00 fits
    for line in _header_lines(report):
        ws.append([_cell(ws, line[0], bold=True), *(_x(ws, v) for v in line[1:])])
    for title, items in report_sections(report):
        ws.append([])
        ws.append([_cell(ws, title, bold=True), _cell(ws, "数值", bold=True)])
        for label, value, kind in items:
            ws.append([_x(ws, label), _cell(ws, value, kind)])
    ws.append([])
    for line in _reconciliation_lines(report):
        ws.append([_cell(ws, line[0], bold=True), _x(ws, line[1])])
    rows = wb.create_sheet("明细")
    _widths(rows, report.columns)
    rows.append([_cell(rows, col.label, bold=True) for col in report.columns])
    for row in report.rows():
        rows.append([_cell(rows, row[col.key], col.kind) for col in report.columns])
    wb.save(fileobj)


# --- the full ledger ---------------------------------------------------------------------

PROGRESS_EVERY = 10_000


def _counted(rows: Iterable[tuple], progress: Progress | None) -> Iterator[tuple]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if progress is not None and n % PROGRESS_EVERY == 0:
            progress(n)
    if progress is not None:
        progress(n)


def ledger_csv(rows: Iterable[tuple], fileobj: IO[str], progress: Progress | None = None) -> None:
    fileobj.write(BOM)
    writer = csv.writer(fileobj)
    writer.writerow([col.label for col in LEDGER_COLUMNS])
    money_at = [i for i, col in enumerate(LEDGER_COLUMNS) if col.kind == "money"]
    for row in _counted(rows, progress):
        out = list(row)
        for i, value in enumerate(out):
            out[i] = neutralise(value)  # money is still a Decimal here: only text is touched
        for i in money_at:
            out[i] = f"{out[i]:.2f}"
        writer.writerow(["" if v is None else v for v in out])


def ledger_csv_copy(copy_sql: str, fileobj: IO[str], progress: Progress | None = None) -> int:
    """The same CSV as `ledger_csv`, formatted by PostgreSQL (COPY ... TO STDOUT) and streamed to the file.

    ~10x faster than formatting each row in Python. Lines end in \\n (COPY's CSV), which Excel reads alike.
    Progress counts newlines (a reason with a line break in it counts twice; the final figure comes from
    the job's row total).
    """
    from django.db import connection

    fileobj.write(BOM)
    csv.writer(fileobj, lineterminator="\n").writerow([col.label for col in LEDGER_COLUMNS])
    lines = reported = 0
    # Normally on its own connection, so the job's progress is written on Django's while the COPY streams.
    # Called inside a transaction (eager tasks, tests) it must see that transaction's rows: then it uses
    # Django's connection and reports progress once, at the end.
    shared = connection.in_atomic_block
    if shared:
        connection.ensure_connection()
    raw = connection.connection if shared else connection.get_new_connection(connection.get_connection_params())
    try:
        with raw.cursor() as cur, cur.copy(copy_sql) as copy:
            for block in copy:
                text = bytes(block).decode("utf-8")
                fileobj.write(text)
                lines += text.count("\n")
                if progress is not None and not shared and lines - reported >= PROGRESS_EVERY:
                    progress(lines)
                    reported = lines
    finally:
        if not shared:
            raw.close()
    if progress is not None:
        progress(lines)
    return lines


def ledger_xlsx(rows: Iterable[tuple], fileobj: IO[bytes], progress: Progress | None = None) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("预算流水")
    _widths(ws, LEDGER_COLUMNS)
    ws.append([_cell(ws, col.label, bold=True) for col in LEDGER_COLUMNS])
    kinds = [col.kind for col in LEDGER_COLUMNS]
    for row in _counted(rows, progress):
        # Only money cells carry a style: a styled cell costs ~3x a plain one in openpyxl (measured: bench/export.py).
        ws.append([_cell(ws, v, k) if k == "money" else _x(ws, v) for v, k in zip(row, kinds, strict=True)])
    wb.save(fileobj)
