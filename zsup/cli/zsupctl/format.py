"""zsupctl's output: tables, human sizes and durations, and small argument parsers."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from typing import Any, Iterable, Sequence

# ------------------------------------------------------------------------------ formatting


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """An aligned text table: numbers right-aligned, text left-aligned, the last column free.

    `align` ("l"/"r" per column) overrides the guess made from the cells. The last column is
    not padded, so a long command line does not push trailing blanks.
    """
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    if align is not None:
        numeric = [a == "r" for a in align]
    else:
        numeric = [bool(rows) and all(_looks_numeric(r[i]) for r in rows if r[i]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            last = i == len(cells) - 1
            if numeric[i]:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell if last else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers))] + [line(r) for r in rows])


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d.]+[%KMGT]?i?B?", text)) or text == "-"


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5K': binary units, one decimal below 10, as `ps`/`top` readers expect."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.0f}T"


def human_duration(seconds: float | None) -> str:
    """192 -> '3m12s': the two largest units are plenty to read an uptime at a glance."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def parse_since(text: str) -> float:
    """`10m`, `2h`, `30s`, `1d` ago, or an ISO timestamp (local time unless it has an offset)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m:
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: use an ISO timestamp (2026-01-31T14:00) or an age (30s, 10m, 2h, 1d)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a naive time is the user's local time
    return when.timestamp()


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def parse_env(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"bad --env {text!r}: use NAME=VALUE")
    name, value = text.split("=", 1)
    return name, value


def job_state(row: dict) -> str:
    """The STATE cell of `zsupctl status`: the job's state, and why when it cannot spawn;
    `starting`/`ready`/`unhealthy` for a running job with checks, `exited` with the codes,
    what it waits for (`depends`), a rolling restart going on or failed."""
    state = row.get("state", "-")
    if row.get("last_error") and state in ("failing", "flapping", "failed"):
        return f"{state}: {row['last_error']}"
    if state == "exited":
        codes = ",".join("-" if c is None else str(c) for c in row.get("exit_codes") or [])
        return f"exited ({codes})" if codes else state
    if state == "running" and row.get("waiting_for") and not row.get("running"):  # `depends`
        return f"waiting for {', '.join(row['waiting_for'])}"
    if state == "running" and "ready" in row:
        running, ready = row.get("running", 0), row.get("ready", 0)
        if row.get("unhealthy"):
            state = "unhealthy"
        elif ready < running:
            state = f"starting ({ready}/{running} ready)"
        elif row.get("checked"):
            state = "ready"
        if row.get("reason") and state != "ready":
            state += f": {row['reason']}"
    roll = row.get("roll") or {}  # a roll in progress, or one that failed (the old ones serve)
    if roll.get("phase") in ("rolling", "failed"):
        state += f", rolling restart {roll['phase']} {roll.get('replaced', 0)}/{roll.get('total', 0)}"
        state += f": {roll['reason']}" if roll.get("reason") else ""
    if row.get("last_limit"):  # zsup/core/resources.py
        state += f" (restarted: {row['last_limit']['reason']})"
    if row.get("schedule"):
        if state == "scheduled" and row.get("exit_codes"):
            state += f" (exit {','.join('-' if c is None else str(c) for c in row['exit_codes'])})"
        state += f", last run {_when(row.get('last_run'))}, next {_when(row.get('next_run'))}"
    return state


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
