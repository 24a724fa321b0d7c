"""Runs spread over machines: merging shards or separate runs into one, and submitting a
sweep's shards as jobs (submitit: a Slurm array or local processes).

May import the layers below (``jacbench.runs`` and under); not the faces.
"""
