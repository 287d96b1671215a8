"""Helpers shared by the report steps of fairness.sh, latency.sh and
scale.sh: their runs CSV with each run's JSON parsed, medians, number
formatting, and the machine's CPU model."""

import csv
import json
import statistics


def load_runs(path, json_field):
    """The rows of a runs CSV; each row's `json_field` parsed into `row["j"]`
    ({} when the run wrote no JSON)."""
    rows = list(csv.DictReader(open(path)))
    for row in rows:
        try:
            row["j"] = json.loads(row[json_field])
        except (TypeError, ValueError):
            row["j"] = {}
    return rows


def med(xs):
    """The median of the values that are not None, or None."""
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=0):
    """`v` with thousands separators and `nd` decimals, or a dash for None."""
    return "—" if v is None else f"{v:,.{nd}f}"


def cpu_model():
    """The CPU's model name from /proc/cpuinfo."""
    with open("/proc/cpuinfo") as info:
        return next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "?")
