"""Runs: points and grids, the registry of methods, operators, user routines, the sweep that
builds, checks and times each task, processes, shards, the row schema, run folders and the
verdicts read off their rows.

May import ``jacbench.ad``, ``jacbench.measure`` and ``jacbench.kernels``.
"""
