"""One benchmark per (shape, method) of the second order: Hessians, Laplacians or
Hessian-vector products, as JACBENCH_BENCH_OPERATOR (or the preset, e.g. pinn-laplacian)
says; see conftest.py.

    JACBENCH_BENCH_PRESET=pinn-laplacian pytest benchmarks/ --benchmark-autosave
    JACBENCH_BENCH_PRESET=pinn-laplacian JACBENCH_BENCH_OPERATOR=hessian pytest benchmarks/

The body is the plugin's ``jacobian_benchmark`` fixture: the method is checked against
float64 torch.func.hessian (its trace, its product with v), then timed, grouped as
``<operator> <shape>``. A user routine (--jacbench-method) is taken to compute the operator.
"""

from conftest import bench_operator


def test_second_order(jacobian_benchmark, second_order_case):
    point, method = second_order_case
    jacobian_benchmark(
        method,
        point.widths,
        point.batch,
        point.dtype,
        point.device,
        operator=bench_operator(),
        model=point.model,
    )
