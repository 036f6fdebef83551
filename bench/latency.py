"""Latency summaries for the issue-4 benchmarks: percentiles of samples in milliseconds."""

from __future__ import annotations

import math
import os


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0 to 100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, float]:
    """Count, p50, p95, p99, min and max of samples."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def line(label: str, values: list[float], width: int = 28) -> str:
    s = summary(values)
    return (
        f"{label:<{width}} n={s['n']:<4} p50 {s['p50']:7.1f}  p95 {s['p95']:7.1f}  "
        f"p99 {s['p99']:7.1f}  min {s['min']:7.1f}  max {s['max']:7.1f} ms"
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"
