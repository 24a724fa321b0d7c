"""Routines that misbehave in every way a run, a check or a grade must survive.

Loaded by the tests through specs (``tests/hostile_routines.py:name``), as a user's file is.
"""

import ctypes
import os
import sys
import time

import torch

from jacbench import jacobian_reverse


def forever(net, x):
    while True:
        time.sleep(0.01)


def exits(net, x):
    sys.exit(0)


def hard_exit(net, x):
    os._exit(3)


def segfault(net, x):
    ctypes.string_at(0)


def interrupts(net, x):
    raise KeyboardInterrupt


def mutates_and_sets_threads(net, x):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    jac = jacobian_reverse(net, x)
    x.mul_(2)
    return jac


def returns_a_list(net, x):
    return jacobian_reverse(net, x).tolist()


def textbook_forever(x, L, param_dict):
    while True:
        time.sleep(0.01)


class RunsCodeWhenUnpickled:
    """A reply that would run a command in whoever unpickled it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/jacbench-forged",))


def forged_reply(net=None, x=None):
    return RunsCodeWhenUnpickled()
