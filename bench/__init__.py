"""Benchmark: replay Microsoft Entra ID provisioning traffic against the service over HTTP.

``python -m bench --help`` (or ``make bench BENCH_ARGS="..."``); see docs/performance.md.
"""
