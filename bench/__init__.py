"""Benchmarks: `python -m bench.NAME [--quick | --smoke]`; JSON lines, then one summary line with ratios.
`--smoke` is seconds of work on tiny data through the same code: what tests/bench runs."""
