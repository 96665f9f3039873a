"""Markdown tables from `bench/scale.py measure --json` files: before/after at 1x and 10x side by side.

    .venv/bin/python bench/scale_table.py before-1x.json after-1x.json before-10x.json after-10x.json

Any of the four may be `-` (not measured). Times in ms unless the row says s; RSS in MB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: str) -> dict:
    return {} if path == "-" or not Path(path).exists() else json.loads(Path(path).read_text())


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def rows(run: dict) -> dict[str, object]:
    out: dict[str, object] = {}
    rec = run.get("reconcile")
    if rec:
        out["reconcile: time (s)"] = rec["s"]
        out["reconcile: peak RSS (MB)"] = rec["peak_rss_mb"]
        out["reconcile: result"] = rec["result"]
    for r in run.get("report", []):
        out[f"budget report {r['format']} by {r['group_by']} (ms)"] = r["ms"]
        out[f"budget report {r['format']} by {r['group_by']}: peak RSS (MB)"] = r["peak_rss_mb"]
    for r in run.get("dashboard", []):
        if "url" in r:
            key = "dashboard (cached, ms)" if "cached" in r["url"] else (
                "dashboard JSON, uncached (ms)" if r["url"].endswith(".json") else "dashboard page, uncached (ms)")
            out[key] = r.get("ms_uncached", r.get("ms"))
            if "sql_ms" in r:
                out[key.replace(" (ms)", "") + " — SQL only (ms)"] = r["sql_ms"]
        else:
            out["ledger rollup catch-up, every row once (s)"] = next(iter(r.values()))["s"]
    for r in run.get("admin", []):
        suffix = r["url"].split("/admin/")[1]
        out[f"admin {r['page']}: `{suffix}` (ms)"] = r["ms"]
        if "sql_ms" in r:
            out[f"admin {r['page']}: `{suffix}` — SQL only (ms)"] = r["sql_ms"]
    for name, q in run.get("queries", {}).items():
        if "execution" in q:
            plan = ", ".join(n for n in q["nodes"] if "Scan" in n or n.startswith("Sort") or "Incremental" in n)
            out[f"{name}: EXPLAIN ANALYZE (ms)"] = float(q["execution"].split(":")[1].split("ms")[0])
            out[f"{name}: plan"] = plan
        else:
            out[f"{name} (ms)"] = q["ms"]
    for r in run.get("user_lists", []):
        out[f"`{r['url']}` for the {r['who']} (ms)"] = r["ms"]
    for r in run.get("export", []):
        out[f"{r['export']} export: rows"] = f"{r['rows']:,}"
        out[f"{r['export']} export: time (s)"] = r["s"]
        out[f"{r['export']} export: peak RSS (MB)"] = r["peak_rss_mb"]
    return out


def main(argv: list[str]) -> int:
    runs = [rows(_load(p)) for p in argv[1:5]]
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run if k not in keys]
    print("| measure | 1x before | 1x after | 10x before | 10x after |")
    print("|---|---:|---:|---:|---:|")
    for key in keys:
        if key.endswith(": plan"):
            continue
        print(f"| {key} | " + " | ".join(_cell(run.get(key)) for run in runs) + " |")
    plans = [k for k in keys if k.endswith(": plan")]
    if plans:
        print("\n| query plan (EXPLAIN ANALYZE, BUFFERS) | 1x before | 1x after | 10x before | 10x after |")
        print("|---|---|---|---|---|")
        for key in plans:
            print(f"| {key[:-6]} | " + " | ".join(_cell(run.get(key)) for run in runs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
