"""Runs: a sweep's options, points and grids, the registry of methods, operators, user
routines, the sweep that builds, checks and times each task, pooled processes, shards and run
folders.

May import ``jacbench.ad``, ``jacbench.measure`` and ``jacbench.kernels``; prints and
renders nothing.
"""
