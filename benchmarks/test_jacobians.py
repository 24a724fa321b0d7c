"""One benchmark per (shape, method) of the preset; see conftest.py for presets and devices.

The body is the ``jacobian_benchmark`` fixture of jacbench's pytest plugin: the method is
checked against float64 torch.func, then timed, grouped by shape.
"""


def test_jacobian(jacobian_benchmark, case):
    point, method = case
    jacobian_benchmark(
        method, point.widths, point.batch, point.dtype, point.device, model=point.model
    )
