"""Aggregating rounds into medians, the results table, and comparing two result files."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.perf.targets import (
    DIRECT,
    GATEWAY,
    GATEWAY_AUDIT,
    GATEWAY_POLICY,
    GATEWAYS,
    PATHS,
    SUFFIXES,
)

WORKLOADS = ("produce", "consume", "masked", "e2e", "idle")
LATENCIES = ("lat_p50_ms", "lat_p99_ms", "lat_p999_ms")

Metrics = dict[str, float]


@dataclass
class RunResult:
    """One workload on one path in one round."""

    workload: str
    path: str
    round: int
    ok: bool = True
    error: str | None = None
    topic: str | None = None
    metrics: Metrics = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def median_metrics(runs: Sequence[RunResult]) -> Metrics:
    """Per metric, the median over the successful rounds; plus rounds_ok and the spread."""
    ok = [run for run in runs if run.ok]
    keys = sorted({key for run in ok for key in run.metrics})
    out: Metrics = {}
    for key in keys:
        values = [run.metrics[key] for run in ok if key in run.metrics]
        values = [v for v in values if not math.isnan(v)]
        if values:
            out[key] = statistics.median(values)
    out["rounds_ok"] = float(len(ok))
    out["rounds_failed"] = float(len(runs) - len(ok))
    rates = [run.metrics["records_per_s"] for run in ok if "records_per_s" in run.metrics]
    if len(rates) > 1 and statistics.median(rates) > 0:
        out["records_per_s_spread_pct"] = (
            (max(rates) - min(rates)) / 2 / statistics.median(rates) * 100
        )
    return out


def summarize(runs: Iterable[RunResult]) -> dict[str, dict[str, Any]]:
    """{workload: {direct: medians, gateway: medians, ratio, added_latency_ms}}."""
    by_key: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        by_key.setdefault((run.workload, run.path), []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for workload in WORKLOADS:
        entry: dict[str, Any] = {}
        for path in PATHS:
            if (workload, path) in by_key:
                entry[path] = median_metrics(by_key[(workload, path)])
        if not entry:
            continue
        direct = entry.get(DIRECT, {})
        for path, suffix in SUFFIXES.items():
            gateway = entry.get(path, {})
            if direct.get("records_per_s") and "records_per_s" in gateway:
                entry[f"ratio{suffix}"] = gateway["records_per_s"] / direct["records_per_s"]
            added = {k: gateway[k] - direct[k] for k in LATENCIES if k in gateway and k in direct}
            if added:
                entry[f"added_latency_ms{suffix}"] = added
        if entry.get("ratio") and entry.get("ratio_policy"):
            # What loading the policy costs, both measured against direct in this run.
            entry["policy_vs_gateway"] = entry["ratio_policy"] / entry["ratio"]
        entry.update(_audit_cost(entry.get(GATEWAY_POLICY, {}), entry.get(GATEWAY_AUDIT, {})))
        summary[workload] = entry
    return summary


def _audit_cost(policy: Metrics, audit: Metrics) -> dict[str, Any]:
    """What the audit log costs: the same policy gateway with audit off and on."""
    cost: dict[str, Any] = {}
    if policy.get("records_per_s") and "records_per_s" in audit:
        cost["audit_vs_policy"] = audit["records_per_s"] / policy["records_per_s"]
    added = {k: audit[k] - policy[k] for k in LATENCIES if k in audit and k in policy}
    if added:
        cost["audit_added_latency_ms"] = added
    return cost


# --------------------------------------------------------------------------- formatting


def _num(value: float | None, digits: int = 0, *, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        digits = 0
    text = f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"
    return text


def _lat(value: float | None, *, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    digits = 2 if abs(value) < 10 else (1 if abs(value) < 100 else 0)
    return _num(value, digits, signed=signed)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2, *, notes: bool = True
) -> str:
    """Plain-text table; the first ``left`` columns (and a last notes column) left-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            is_left = i < left or (notes and i == len(cells) - 1)
            out.append(cell.ljust(width) if is_left else cell.rjust(width))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


TABLE_HEADERS = (
    "workload",
    "path",
    "rec/s",
    "±%",
    "MiB/s",
    "gw/dir",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "+p50",
    "+p99",
    "+p99.9",
    "gw CPU s",
    "gw peak MiB",
    "broker CPU s",
    "client CPU s",
    "other CPU s",
    "notes",
)


def _notes(workload: str, path: str, m: Metrics, entry: dict[str, Any], summary: Any) -> str:
    notes: list[str] = []
    if m.get("rounds_failed"):
        notes.append(f"{m['rounds_failed']:.0f} round(s) FAILED")
    if workload == "consume" and "rebalance_ms" in m:
        notes.append(f"group join {m['rebalance_ms']:,.0f} ms incl.")
    if workload == "e2e":
        notes.append(f"n={m.get('measured', 0):,.0f} lost={m.get('lost', 0):,.0f}")
    if workload == "idle":
        if path in GATEWAYS and "idle_rss_before_mb" in m:
            notes.append(
                f"RSS {m['idle_rss_before_mb']:.1f}->{m['idle_rss_after_mb']:.1f} MiB "
                f"({m['idle_kb_per_conn']:.1f} KiB/conn)"
            )
        alone = summary.get("produce", {}).get(path, {}).get("records_per_s")
        if alone and "records_per_s" in m:
            notes.append(f"x{m['records_per_s'] / alone:.2f} vs produce alone")
    if path in GATEWAYS:
        notes += _gateway_notes(path, m, entry)
    return "; ".join(notes)


def _gateway_notes(path: str, m: Metrics, entry: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    if path == GATEWAY_POLICY and entry.get("policy_vs_gateway"):
        notes.append(f"x{entry['policy_vs_gateway']:.3f} vs gateway without policy")
    if path == GATEWAY_POLICY and "gw_policy_allowed" in m:
        notes.append(f"{m['gw_policy_allowed']:,.0f} allowed")
    if path == GATEWAY_AUDIT and entry.get("audit_vs_policy"):
        added = entry.get("audit_added_latency_ms", {}).get("lat_p99_ms")
        p99 = f", {_lat(added, signed=True)} ms p99" if added is not None else ""
        notes.append(f"x{entry['audit_vs_policy']:.3f}{p99} vs audit off (gateway-policy)")
    if path == GATEWAY_AUDIT and "gw_audit_events" in m:
        notes.append(f"{m['gw_audit_events']:,.0f} events")
    if m.get("gw_masked_records"):
        notes.append(f"{m['gw_masked_records']:,.0f} records masked")
    if m.get("gw_requests"):
        notes.append(
            f"{m['gw_requests']:,.0f} req, {m.get('gw_cpu_us_per_request', 0):,.0f} us CPU/req"
        )
    if m.get("gw_warnings"):
        notes.append(f"{m['gw_warnings']:.0f} gw warnings")
    return notes


WORKLOAD_LABELS = {
    "produce": "produce 1KiB acks=all",
    "consume": "consume",
    "masked": "consume Avro, 3/12 masked",
    "e2e": "e2e latency {rate} msg/s",
    "idle": "produce + {idle} idle conns",
}


def table_rows(summary: dict[str, dict[str, Any]], settings: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for workload in WORKLOADS:
        entry = summary.get(workload)
        if entry is None:
            continue
        label = WORKLOAD_LABELS[workload].format(
            rate=f"{settings.get('e2e_rate', 0):,.0f}", idle=settings.get("idle_connections", 0)
        )
        for path in PATHS:
            m = entry.get(path)
            if m is None:
                continue
            gw = path in GATEWAYS
            suffix = SUFFIXES.get(path, "")
            added = entry.get(f"added_latency_ms{suffix}", {})
            rows.append(
                [
                    label,
                    path,
                    _num(m.get("records_per_s")),
                    _num(m.get("records_per_s_spread_pct"), 1),
                    _num(m.get("mb_per_s"), 1),
                    _num(entry.get(f"ratio{suffix}"), 2) if gw else "",
                    _lat(m.get("lat_p50_ms")),
                    _lat(m.get("lat_p99_ms")),
                    _lat(m.get("lat_p999_ms")),
                    _lat(added.get("lat_p50_ms"), signed=True) if gw else "",
                    _lat(added.get("lat_p99_ms"), signed=True) if gw else "",
                    _lat(added.get("lat_p999_ms"), signed=True) if gw else "",
                    _num(m.get("gw_cpu_s"), 1) if gw else "",
                    _num(m.get("gw_rss_peak_mb"), 1) if gw else "",
                    _num(m.get("broker_cpu_s"), 1),
                    _num(m.get("client_cpu_s"), 1),
                    _num(m.get("other_cpu_s"), 1),
                    _notes(workload, path, m, entry, summary),
                ]
            )
    return rows


def soak_row(soak: dict[str, Any]) -> list[str]:
    m: Metrics = soak.get("medians", {})
    notes = (
        f"RSS first/after run 1/last/max {soak['rss_first_mb']:.1f}/"
        f"{soak.get('rss_after_first_run_mb') or float('nan'):.1f}/{soak['rss_last_mb']:.1f}/"
        f"{soak['rss_max_mb']:.1f} MiB over {soak['elapsed_s']:.0f} s, {soak['iterations']} runs"
    )
    if soak.get("errors"):
        notes += f"; {len(soak['errors'])} run(s) FAILED"
    return [
        f"soak {soak['seconds']:.0f}s (produce+idle)",
        GATEWAY,
        _num(m.get("records_per_s")),
        _num(m.get("records_per_s_spread_pct"), 1),
        _num(m.get("mb_per_s"), 1),
        "",
        _lat(m.get("lat_p50_ms")),
        _lat(m.get("lat_p99_ms")),
        _lat(m.get("lat_p999_ms")),
        "",
        "",
        "",
        _num(soak.get("gw_cpu_s"), 1),
        _num(soak.get("rss_max_mb"), 1),
        _num(soak.get("broker_cpu_s"), 1),
        "",
        "",
        notes,
    ]


def results_table(doc: dict[str, Any]) -> str:
    rows = table_rows(doc["summary"], doc["settings"])
    if doc.get("soak"):
        rows.append(soak_row(doc["soak"]))
    return render_table(TABLE_HEADERS, rows)


# --------------------------------------------------------------------------- compare

COMPARED = (
    ("records_per_s", "rec/s", 0),
    ("lat_p50_ms", "p50 ms", 2),
    ("lat_p99_ms", "p99 ms", 2),
    ("lat_p999_ms", "p99.9 ms", 2),
    ("gw_cpu_s", "gw CPU s", 1),
    ("gw_rss_peak_mb", "gw peak MiB", 1),
)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or a == 0:
        return "-"
    return f"{b / a:.2f}"


MISSING = "missing"


def _compared_cell(key: str, value: float | None, digits: int) -> str:
    return _lat(value) if key.startswith("lat_") else _num(value, digits)


def _gw_ratio(entry: dict[str, Any], path: str, present: bool) -> str:
    if path not in GATEWAYS:
        return ""
    if not present:
        return MISSING
    return _num(entry.get(f"ratio{SUFFIXES[path]}"), 2)


def compare_table(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Side by side: A, B and B/A for the main metrics of every workload and path; a
    path or workload one file lacks (the policy path in files older than it) shows as
    missing rather than vanishing from the comparison."""
    headers = ["workload", "path"]
    for _, label, _ in COMPARED:
        headers += [f"{label} A", "B", "B/A"]
    headers += ["gw/dir A", "gw/dir B"]
    rows: list[list[str]] = []
    for workload in WORKLOADS:
        ea, eb = a["summary"].get(workload) or {}, b["summary"].get(workload) or {}
        for path in PATHS:
            ma, mb = ea.get(path), eb.get(path)
            if ma is None and mb is None:
                continue
            row = [workload, path]
            for key, _, digits in COMPARED:
                va = ma.get(key) if ma is not None else None
                vb = mb.get(key) if mb is not None else None
                row += [
                    _compared_cell(key, va, digits) if ma is not None else MISSING,
                    _compared_cell(key, vb, digits) if mb is not None else MISSING,
                    _ratio(va, vb),
                ]
            row += [_gw_ratio(ea, path, ma is not None), _gw_ratio(eb, path, mb is not None)]
            rows.append(row)
    return render_table(headers, rows, notes=False)


def describe(doc: dict[str, Any]) -> str:
    git = doc.get("git", {})
    machine = doc.get("machine", {})
    dirty = " (dirty)" if git.get("dirty") else ""
    return (
        f"{doc.get('started_utc', '?')}  {git.get('sha', '?')}{dirty}  "
        f"{machine.get('cpu_count', '?')} CPU {machine.get('cpu_model', '?')}"
    )
