"""The textbook exercise's two routines, in its calling convention ``fn(x, L, param_dict)``.

``param_dict`` holds ``W1`` (K×D), ``W2`` … ``WL`` (K×K) and ``WF`` (P×K); the network is
f(x) = WF·tanh(WL·…tanh(W1·x)). Each routine returns the Jacobian ∂f/∂x, shape (P, D), for
one input x of shape (D,). Grade them and time them with jacbench:

    jacbench check examples/textbook.py:my_backward_2a
    jacbench run --methods reverse examples/textbook.py:my_backward_2a --preset textbook
"""

import torch


def my_backward_2a(x, L, param_dict):
    """Reverse mode: one forward pass keeping σ'(z_k), then adjoint rows from WF to W1."""
    slopes, h = [], x
    for k in range(1, L + 1):
        h = torch.tanh(param_dict[f"W{k}"] @ h)
        slopes.append(1 - h**2)  # tanh'(z) = 1 − tanh(z)²
    adjoint = param_dict["WF"]
    for k in range(L, 0, -1):
        adjoint = (adjoint * slopes[k - 1]) @ param_dict[f"W{k}"]  # scale columns, then W_k
    return adjoint


def my_forward_2b(x, L, param_dict):
    """Forward mode with diag(σ') materialised, as the textbook writes it."""
    tangent, h = None, x
    for k in range(1, L + 1):
        w = param_dict[f"W{k}"]
        h = torch.tanh(w @ h)
        sigma = torch.diag(1 - h**2)
        tangent = sigma @ w if tangent is None else sigma @ (w @ tangent)
    return param_dict["WF"] @ tangent
