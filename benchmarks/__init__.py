"""Benchmarks: each `bench_*.py` module has a `main()` that measures against a baseline run in the same
process and writes JSON into `benchmarks/results/`. Run all with `make bench` (or `python -m benchmarks NAME`)."""
