"""Benchmarks: `python -m bench.NAME [--quick]`; JSON lines, then one summary line with ratios."""
