"""Routines as users write them, right and wrong, for the routine and grading tests.

Loaded by the tests through specs (``tests/user_routines.py:name``), as a user's file is.
"""

import torch

from jacbench import jacobian, jacobian_reverse


def textbook_reverse(x, L, param_dict):
    slopes, h = [], x
    for k in range(1, L + 1):
        h = torch.tanh(param_dict[f"W{k}"] @ h)
        slopes.append(1 - h**2)
    adjoint = param_dict["WF"]
    for k in range(L, 0, -1):
        adjoint = (adjoint * slopes[k - 1]) @ param_dict[f"W{k}"]
    return adjoint


def forgets_layer_2(x, L, param_dict):
    slopes, h = [], x
    for k in range(1, L + 1):
        h = torch.tanh(param_dict[f"W{k}"] @ h)
        slopes.append(1 - h**2)
    adjoint = param_dict["WF"]
    for k in range(L, 0, -1):
        if k != 2:
            adjoint = adjoint * slopes[k - 1]
        adjoint = adjoint @ param_dict[f"W{k}"]
    return adjoint


def forgets_every_slope(x, L, param_dict):
    adjoint = param_dict["WF"]
    for k in range(L, 0, -1):
        adjoint = adjoint @ param_dict[f"W{k}"]
    return adjoint


def transposed(x, L, param_dict):
    return textbook_reverse(x, L, param_dict).T


def mutates_its_weights(x, L, param_dict):
    jac = textbook_reverse(x, L, param_dict)
    param_dict["W1"].mul_(2.0)
    return jac


def returns_nan(x, L, param_dict):
    return textbook_reverse(x, L, param_dict) * float("nan")


def raises(net, x):
    raise RuntimeError("not written yet")


def library_batched(net, x):
    return jacobian_reverse(net, x)


def library_one_sample(net, x):
    if x.ndim != 1:
        raise ValueError("one sample at a time")
    return jacobian(net, x)


def wrong_when_deep(net, x):
    jac = jacobian(net, x)
    return jac * 1.5 if net.depth > 2 else jac


def three_arguments_too_many(a, b, c, d):
    return None


def right_on_one_thread(net, x):
    """Right only where torch runs on one thread: tells a test how many its sandbox got."""
    return jacobian_reverse(net, x) * torch.get_num_threads()
