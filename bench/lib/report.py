"""The benches' report helpers: a nearest-rank percentile and one Markdown table row with its
verdict. Imported by bench/l2.py, bench/bgp.py and bench/bgp_speaker.py (run as scripts, so
`bench/` is on sys.path); not a bench itself (./dev runs only bench/*.py)."""

from __future__ import annotations


def pct(values: list[float], p: int) -> float:
    """The p-th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def row(what: str, value: str, target: str = "", ok: bool | None = None) -> bool:
    """Print `| what | value | target verdict |`; False only when `ok` is False."""
    verdict = "" if ok is None else ("PASS" if ok else "MISS")
    print(f"| {what} | {value} | {target} {verdict} |".replace("  |", " |"), flush=True)
    return ok is not False
