"""The mathematics: networks, the cost model, and the derivatives themselves (Jacobians in
forward, reverse and mixed mode, second order, CUDA graphs of them, a fused GPU kernel).

May import ``jacbench.kernels`` and ``jacbench.measure`` (the routines run the kernels the
tuning chose); knows nothing of runs, the cluster or the faces.
"""
