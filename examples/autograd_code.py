"""A function written for torch.autograd, as scientific code often is: one sample at a time,
float64, writes into tensors it made itself, and a Python branch on a value. jacbench batches
it, finds what torch.func can and cannot do with it, and times the methods that run it:

    jacbench predict --model examples/autograd_code.py:make_forced_pendulum --d-in 8 --d-out 40 --dtype float64
    jacbench run --model examples/autograd_code.py:make_forced_pendulum --d-in 8 --d-out 40 --batch 1 4 --dtype float64
"""

import math

import torch


def make_forced_pendulum(d_in, d_out, steps=200, dt=0.02):
    """θ ↦ the angle of a damped pendulum at ``d_out`` times, driven by a forcing whose
    ``d_in`` Fourier coefficients are θ (semi-implicit Euler, ``steps`` steps of ``dt``)."""
    frequencies = torch.arange(1, d_in + 1, dtype=torch.float64) * (2 * math.pi / (steps * dt))
    every = max(steps // d_out, 1)

    def angles(theta):  # theta: one sample, shape (D,)
        angle = torch.zeros((), dtype=theta.dtype)
        speed = torch.zeros((), dtype=theta.dtype)
        out = torch.zeros(d_out, dtype=theta.dtype)  # written in place below
        for step in range(steps):
            force = (theta * torch.cos(frequencies.to(theta.dtype) * step * dt)).sum()
            speed = speed + dt * (force - torch.sin(angle) - 0.1 * speed)
            if speed.abs() > 20:  # a Python branch on a value: the speed is capped
                speed = speed.clamp(-20, 20)
            angle = angle + dt * speed
            if step % every == every - 1 and step // every < d_out:
                out[step // every] = angle
        return out

    return angles
