"""The Triton kernel of ``jacbench.ad.fused`` (NOTE: [One kernel for a small network] there).

Imported only when the fused method runs: Triton is optional. Triton resolves a kernel's
helpers among its module's globals, hence a module of its own.
"""

import triton
import triton.language as tl


@triton.jit
def activate(z, ACT: tl.constexpr):
    """(σ(z), σ'(z)) elementwise."""
    if ACT == 0:  # tanh, through exp of −2|z| so that nothing overflows
        e = tl.exp(-2.0 * tl.abs(z))
        t = (1.0 - e) / (1.0 + e)
        a = tl.where(z < 0, -t, t)
        return a, 1.0 - a * a
    elif ACT == 1:  # sigmoid
        a = 1.0 / (1.0 + tl.exp(-z))
        return a, a * (1.0 - a)
    elif ACT == 2:  # relu
        return tl.maximum(z, 0.0), tl.where(z > 0, 1.0, 0.0)
    elif ACT == 3:  # softplus, linear above 20 as torch's
        s = 1.0 / (1.0 + tl.exp(-z))
        soft = tl.log(1.0 + tl.exp(tl.minimum(z, 20.0)))
        return tl.where(z > 20.0, z, soft), tl.where(z > 20.0, 1.0, s)
    else:  # identity
        return z, tl.full(z.shape, 1.0, z.dtype)


@triton.jit
def jacobian_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, B,
    D: tl.constexpr, P: tl.constexpr, L: tl.constexpr, N: tl.constexpr,
    G: tl.constexpr, S: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    # Row r of the tile: sample pid·S + r // G, slot r % G (0: the primal row, 1…D:
    # tangent rows, the rest zero).
    R: tl.constexpr = S * G
    rows = tl.arange(0, R)
    cols = tl.arange(0, N)
    sample = tl.program_id(0) * S + rows // G
    slot = rows % G
    valid = sample < B
    primal = slot[:, None] == 0
    x = tl.load(
        x_ptr + sample[:, None] * D + cols[None, :],
        mask=valid[:, None] & primal & (cols[None, :] < D),
        other=0.0,
    )
    tangent = (slot[:, None] >= 1) & (slot[:, None] <= D)
    m = tl.where(tangent & (slot[:, None] - 1 == cols[None, :]), 1.0, x)
    first_of_group = (tl.arange(0, G) == 0)[None, :, None]
    primal3 = tl.reshape(primal, (S, G, 1))
    for k in tl.static_range(L):
        w = tl.load(w_ptr + k * N * N + cols[:, None] * N + cols[None, :])
        z = tl.dot(m, w, input_precision="ieee")
        bias = tl.load(b_ptr + k * N + cols)
        z = z + tl.where(primal, bias[None, :], 0.0)
        z3 = tl.reshape(z, (S, G, N))
        z_primal = tl.sum(tl.where(first_of_group, z3, 0.0), axis=1)
        a, slope = activate(z_primal, ACT)
        m3 = tl.where(primal3, a[:, None, :], z3 * slope[:, None, :])
        m = tl.reshape(m3, (R, N))
    w = tl.load(w_ptr + L * N * N + cols[:, None] * N + cols[None, :])
    z = tl.dot(m, w, input_precision="ieee")
    # J[b, p, d] = z[row of (b, slot 1 + d), p]
    target = out_ptr + sample[:, None] * (P * D) + cols[None, :] * D + (slot[:, None] - 1)
    tl.store(target, z, mask=valid[:, None] & tangent & (cols[None, :] < P))
