"""The measuring instruments and their records: the timing primitive, statistics of samples,
the device's ceilings, the kernels' tuning and the allocator setting, the machine-wide timing
locks, the facts of the machine a measurement ran on, and the row (the record of one
measurement).

May import ``jacbench.kernels`` only: an instrument times any function and knows no network.
"""
