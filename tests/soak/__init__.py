"""Soak runs: many repetitions of real 2-worker jobs, out of the default test run.

    python -m tests.soak                      # 100 clean, 20 restarts, 20 launcher kills
    python -m tests.soak --clean 10 --restarts 2 --launcher-kills 2   # a quick look

Prints a table; docs/faults.md quotes it.
"""
