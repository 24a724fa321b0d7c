"""The mathematics: networks, the cost model, and the derivatives themselves (Jacobians in
forward, reverse and mixed mode, second order, CUDA graphs of them, a fused GPU kernel).

May import ``jacbench.kernels``; knows nothing of measuring, runs or their faces.
"""
