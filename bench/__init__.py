"""mediamux benchmarks: every row compares mediamux with a baseline measured in the same run.

Run ``python -m bench`` (full) or ``python -m bench --quick`` (smoke, under two minutes). The table
is printed and written to ``bench/out/results.md``; ``bench/RESULTS.md`` holds a committed run.
"""
