"""Throughput and latency benchmarks: the primary dev cluster directly vs through the gateway.

Run with ``make bench`` or ``python -m tests.perf.bench --help``. Nothing here asserts a
timing; the harness prints a report and writes a JSON file that two commits can be
compared with (``--compare A.json B.json``).
"""
