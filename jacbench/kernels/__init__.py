"""The arithmetic the routines run on: activations (σ with σ' and σ'' beside it), the
narrow products and the other kernels that can run more than one way, and which way is
chosen (the tuning's choices, measured by ``jacbench.measure.tuning``).

The lowest layer: it imports nothing of jacbench's.
"""
