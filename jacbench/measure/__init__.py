"""The measuring instruments: the timing primitive, statistics of samples, the device's
ceilings, the kernels' tuning, the allocator setting, the machine-wide timing locks and the
facts of the machine a measurement ran on.

May import ``jacbench.kernels``; independent of ``jacbench.ad`` (an instrument times any
function).
"""
