"""Scale benchmark (issue 12): a generated city block of N points in M LAZ files (and as one file) through the
tiles, terrain and buildings jobs on 1, 2, ... W workers, against the lazrs parallel decode of the same files and
py3dtiles. ``python -m benchmarks.scale --help``; the plan and the figures are in docs/scale.md.
"""
