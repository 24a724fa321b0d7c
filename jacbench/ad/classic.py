"""The classic AD benchmark problems as models: where AD tools are compared (ADBench, and
GradBench after it), written here from their published definitions, with synthetic data of
the published sizes made from the seed (nothing is downloaded).

Each is a factory ``make(d_in, d_out, **params)`` of a function of one sample, (D,) → (P,),
the way these problems are written (jacbench batches it: NOTE: [Models of one sample]):

- ``hand``: hand tracking. 26 pose parameters (a global rotation as an angle-axis vector, a
  translation, and four joint angles for each of five fingers) move n = P / 3 points
  attached to the fingers' bones; the residuals are the points' 3-D offsets from their
  targets (observations of a seeded true pose). D = 26, P = 3·n: forward mode's problem.
- ``ba``: bundle adjustment's block. One observation: a camera (angle-axis rotation,
  centre, focal length, principal point, two radial distortion coefficients: 11), a 3-D
  point (3) and a weight (1) → the weighted reprojection error against the observed
  feature (2). D = 15, P = 2, one block per observation: a batch of observations. The
  input is the offset from a nominal observation (so that a seeded input is a plausible
  one).
- ``gmm``: the log-likelihood of a Gaussian mixture of k components in d dimensions at n
  seeded points, with ADBench's Wishart prior, as a function of its parameters (weights'
  logits k, means k·d, the log-diagonals k·d and lower triangles k·d(d−1)/2 of the inverse
  covariances' Cholesky factors): D = k(d(d+1)/2 + d + 1), P = 1. Reverse mode's problem.
- ``ode``: the state after ``steps`` steps of the classic Runge–Kutta method for
  y' = tanh(A·y) − y/10 from y(0) = x, n = D = P: a long chain of square Jacobians.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Function = Callable[[Tensor], Tensor]

# Hand tracking: five fingers of four joint angles each, bones of these lengths (cm).
FINGERS = 5
BONES = (4.0, 2.5, 2.0)
HAND_PARAMETERS = 3 + 3 + 4 * FINGERS  # 26


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rotation(axis_angle: Tensor) -> Tensor:
    """Rodrigues' rotation matrix of an angle-axis vector (smooth at 0: the angle is taken
    as sqrt(|r|² + ε), so no branch on a value)."""
    angle = torch.sqrt((axis_angle * axis_angle).sum() + 1e-12)
    k = axis_angle / angle
    zero = torch.zeros((), dtype=axis_angle.dtype)
    cross = torch.stack(
        [
            torch.stack([zero, -k[2], k[1]]),
            torch.stack([k[2], zero, -k[0]]),
            torch.stack([-k[1], k[0], zero]),
        ]
    )
    eye = torch.eye(3, dtype=axis_angle.dtype)
    return eye + torch.sin(angle) * cross + (1 - torch.cos(angle)) * (cross @ cross)


def _about_x(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack(
        [torch.stack([one, zero, zero]), torch.stack([zero, c, -s]), torch.stack([zero, s, c])]
    )


def _about_z(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack(
        [torch.stack([c, -s, zero]), torch.stack([s, c, zero]), torch.stack([zero, zero, one])]
    )


def make_hand(d_in: int, d_out: int) -> Function:
    """Hand tracking (see the module): D = 26, P = 3·n points.

    >>> make_hand(26, 30)(torch.zeros(26, dtype=torch.float64)).shape
    torch.Size([30])
    """
    if d_in != HAND_PARAMETERS or d_out % 3 or d_out < 3:
        raise ValueError(
            f"hand takes d_in = 26 pose parameters and d_out = 3·points, got {d_in}, {d_out}"
        )
    points = d_out // 3
    gen = _generator(26)
    # Each point hangs off one bone of one finger, at an offset in that bone's frame.
    finger = torch.randint(0, FINGERS, (points,), generator=gen)
    bone = torch.randint(0, len(BONES), (points,), generator=gen)
    offset = torch.randn(points, 3, generator=gen, dtype=torch.float64) * 0.4
    base = torch.tensor([[x, 8.0, 0.0] for x in (-3.0, -1.5, 0.0, 1.5, 3.5)], dtype=torch.float64)
    spread = torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.5], dtype=torch.float64)
    true_pose = torch.randn(HAND_PARAMETERS, generator=gen, dtype=torch.float64) * 0.2

    def pose_points(theta: Tensor) -> Tensor:
        dtype = theta.dtype
        angles = theta[6:].reshape(FINGERS, 4)
        joints = []  # per finger: per bone, (rotation, origin) in the hand's frame
        for f in range(FINGERS):
            rot = _about_z(angles[f, 0] + spread[f].to(dtype)) @ _about_x(angles[f, 1])
            origin = base[f].to(dtype)
            frames = []
            for b, length in enumerate(BONES):
                if b > 0:
                    rot = rot @ _about_x(angles[f, b + 1])
                frames.append((rot, origin))
                origin = origin + rot @ torch.tensor([0.0, length, 0.0], dtype=dtype)
            joints.append(frames)
        rotations = torch.stack([torch.stack([r for r, _ in fr]) for fr in joints])
        origins = torch.stack([torch.stack([o for _, o in fr]) for fr in joints])
        local = rotations[finger, bone] @ offset.to(dtype)[:, :, None]
        in_hand = origins[finger, bone] + local[:, :, 0]
        return in_hand @ _rotation(theta[:3]).T + theta[3:6]

    with torch.no_grad():
        noise = torch.randn(points, 3, generator=gen, dtype=torch.float64) * 0.05
        targets = pose_points(true_pose) + noise

    def residuals(theta: Tensor) -> Tensor:
        return (pose_points(theta) - targets.to(theta.dtype)).reshape(-1)

    return residuals


BA_CAMERA = 11
BA_INPUTS = BA_CAMERA + 3 + 1  # 15
# A block's inputs are offsets from a nominal camera 5 units behind the origin looking at a
# point near it, in units that keep a standard normal offset a plausible configuration (a
# point behind the camera would make the projection's denominator cross zero).
BA_NOMINAL = torch.tensor(
    [0.1, 0.2, 0.3, 0, 0, -5, 1.0, 0, 0, 0.01, 0.001, 0, 0, 0, 1.0], dtype=torch.float64
)
BA_SCALE = torch.tensor(
    [0.05, 0.05, 0.05, 0.2, 0.2, 0.2, 0.1, 0.05, 0.05, 0.005, 0.0005, 0.3, 0.3, 0.3, 0.1],
    dtype=torch.float64,
)


def make_ba(d_in: int, d_out: int) -> Function:
    """Bundle adjustment's reprojection block (see the module): D = 15, P = 2; its input
    is the offset from a nominal camera, point and weight (``BA_NOMINAL``, in units of
    ``BA_SCALE``).

    >>> make_ba(15, 2)(torch.zeros(15, dtype=torch.float64)).shape
    torch.Size([2])
    """
    if (d_in, d_out) != (BA_INPUTS, 2):
        raise ValueError(
            f"ba takes d_in = 15 (camera 11, point 3, weight 1) and d_out = 2, got {d_in}, {d_out}"
        )
    feature = torch.randn(2, generator=_generator(15), dtype=torch.float64)

    def reprojection(x: Tensor) -> Tensor:
        x = BA_NOMINAL.to(x.dtype) + BA_SCALE.to(x.dtype) * x
        r, centre, focal = x[:3], x[3:6], x[6]
        principal, kappa = x[7:9], x[9:11]
        point, weight = x[11:14], x[14]
        in_camera = _rotation(r) @ (point - centre)
        projected = in_camera[:2] / in_camera[2]
        rsq = (projected * projected).sum()
        distortion = 1 + kappa[0] * rsq + kappa[1] * rsq * rsq
        return weight * (focal * distortion * projected + principal - feature.to(x.dtype))

    return reprojection


def gmm_parameters(components: int, dims: int) -> int:
    """D of ``gmm``: k weights, k·d means, k·d log-diagonals, k·d(d−1)/2 lower triangles."""
    return components * (1 + 2 * dims + dims * (dims - 1) // 2)


def make_gmm(
    d_in: int, d_out: int, *, dims: int = 2, points: int = 1000, gamma: float = 1.0, m: int = 0
) -> Function:
    """A Gaussian mixture's log-likelihood with the Wishart prior (ADBench's objective, its
    constant terms left out): D = k(d(d+1)/2 + d + 1) for ``dims`` = d, P = 1.

    >>> make_gmm(30, 1)(torch.zeros(30, dtype=torch.float64)).shape
    torch.Size([1])
    """
    per = 1 + 2 * dims + dims * (dims - 1) // 2
    if d_out != 1 or d_in % per:
        raise ValueError(
            f"gmm takes d_out = 1 and d_in = k·{per} (k components in {dims} dimensions), "
            f"got {d_in}, {d_out}"
        )
    k = d_in // per
    data = torch.randn(points, dims, generator=_generator(k), dtype=torch.float64)
    rows, cols = torch.tril_indices(dims, dims, offset=-1)

    def log_likelihood(theta: Tensor) -> Tensor:
        dtype = theta.dtype
        alphas = theta[:k]
        means = theta[k : k + k * dims].reshape(k, dims)
        log_diag = theta[k + k * dims : k + 2 * k * dims].reshape(k, dims)
        lower = theta[k + 2 * k * dims :].reshape(k, -1)
        q = torch.diag_embed(torch.exp(log_diag))
        q = q.index_put((torch.arange(k)[:, None], rows[None], cols[None]), lower, accumulate=True)
        centred = data.to(dtype)[None] - means[:, None]  # (k, n, d)
        mahalanobis = torch.einsum("kij,knj->kni", q, centred)
        inner = alphas[:, None] + log_diag.sum(1)[:, None] - 0.5 * (mahalanobis**2).sum(-1)
        likelihood = torch.logsumexp(inner, 0).sum() - points * torch.logsumexp(alphas, 0)
        prior = (
            0.5 * gamma**2 * (torch.exp(log_diag) ** 2).sum() + 0.5 * gamma**2 * (lower**2).sum()
            - m * log_diag.sum()
        )  # fmt: skip
        return (likelihood - prior)[None]

    return log_likelihood


def _runge_kutta(rate: Callable[[Any], Any], y: Any, steps: int, dt: float) -> Any:
    """``steps`` classic Runge–Kutta steps of y' = rate(y) from y: torch's arrays or JAX's."""
    for _ in range(steps):
        k1 = rate(y)
        k2 = rate(y + 0.5 * dt * k1)
        k3 = rate(y + 0.5 * dt * k2)
        k4 = rate(y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def make_ode(d_in: int, d_out: int, *, steps: int = 20, dt: float = 0.05) -> Function:
    """The state after ``steps`` classic Runge–Kutta steps of y' = tanh(A·y) − y/10 from
    y(0) = x: D = P = n.

    >>> make_ode(4, 4)(torch.zeros(4, dtype=torch.float64)).shape
    torch.Size([4])
    """
    if d_in != d_out:
        raise ValueError(f"ode maps a state to a state: d_in = d_out, got {d_in}, {d_out}")
    a = torch.randn(d_in, d_in, generator=_generator(d_in), dtype=torch.float64) / math.sqrt(d_in)

    def integrate(y: Tensor) -> Tensor:
        matrix = a.to(y.dtype)

        def rate(state: Tensor) -> Tensor:
            return torch.tanh(matrix @ state) - 0.1 * state

        return _runge_kutta(rate, y, steps, dt)

    def to_jax() -> Callable[[Any], Any]:  # its JAX twin (NOTE: [A model's JAX twin])
        import jax.numpy as jnp

        from jacbench.ad.jax_twins import matmul

        a_array = a.numpy()  # float64; each call's dtype is the input's

        def integrate_jax(y):
            matrix = jnp.asarray(a_array, dtype=y.dtype)

            def rate(state):
                return jnp.tanh(matmul(matrix, state)) - 0.1 * state

            return _runge_kutta(rate, y, steps, dt)

        return integrate_jax

    integrate.to_jax = to_jax  # type: ignore[attr-defined]
    return integrate
