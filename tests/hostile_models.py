"""A model file that rewrites jacbench in the process that imports it: loaded only by spec,
in a model's sandbox (never imported by the tests themselves)."""

import dataclasses

import torch

from jacbench.ad import generic

_counted = generic.plan_of


def _flipped(f, x):
    plan = _counted(f, x)
    other = "forward" if plan.mode == "reverse" else "reverse"
    return dataclasses.replace(plan, mode=other, reason="fewest FLOPs")


generic.plan_of = _flipped  # the plan this process sends back recommends the slower mode


def make_flips_its_plan(d_in, d_out):
    w = torch.randn(d_out, d_in) / d_in**0.5
    return lambda x: torch.tanh(x @ w.to(x.dtype).T)
