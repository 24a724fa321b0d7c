import pytest

from jacbench.measure.rows import RowKey
from jacbench.runs.grid import PRESETS, Point, expand_grid, get_preset
from jacbench.runs.methods import METHODS


def test_expand_grid_is_the_product_without_repeats():
    points = expand_grid(depths=[1, 2], d_in=[3, 3], width=[4], d_out=[1, 2], batch=[1, 5])
    assert len(points) == 2 * 1 * 2 * 2
    assert points[0] == Point((3, 4, 1), 1, "float32", "cpu")
    assert points[-1] == Point((3, 4, 4, 2), 5, "float32", "cpu")


def test_explicit_shapes_join_the_grid_in_every_dtype():
    points = expand_grid(shapes=[((8, 2, 8), 3)], dtype=["float32", "float64"])
    assert points == [Point((8, 2, 8), 3, "float32"), Point((8, 2, 8), 3, "float64")]


def test_point_dimensions_and_key():
    point = Point((8, 2, 9, 1), 4, "float64", "cpu")
    assert (point.depth, point.d_in, point.width, point.d_out) == (2, 8, 9, 1)
    assert point.key("reverse") == RowKey((8, 2, 9, 1), 4, "float64", "cpu", "reverse")


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"depths": [1], "d_in": [2.5], "width": [3], "d_out": [1]}, "d_in takes whole numbers"),
        ({"depths": [1], "d_in": [True], "width": [3], "d_out": [1]}, "d_in takes whole numbers"),
        ({"depths": [], "d_in": [2], "width": [3], "d_out": [1]}, "depths needs at least one"),
        ({"shapes": [((3, 1), 1)]}, "widths needs at least 3 entries"),
        ({"dtype": ["half"]}, "unknown dtype 'half'"),
    ],
)
def test_expand_grid_refuses_bad_values(grid, message):
    with pytest.raises(ValueError, match=message):
        expand_grid(**grid)


def test_presets_name_known_methods_and_make_points():
    for name, preset in PRESETS.items():
        assert preset.points(), name
        assert set(preset.methods or ()) <= set(METHODS), name
    seed = get_preset("seed").points()
    assert [p.widths for p in seed] == [
        (1000, 1000, 1000, 1000, 1),
        (1000, *[1000] * 5, 1),
        (1000, *[1000] * 10, 1),
    ]


def test_grid_presets_take_overrides_fixed_lists_refuse_them():
    quick = get_preset("quick").points(overrides={"depths": [2], "d_out": [1]})
    assert {p.widths for p in quick} == {(4, 256, 256, 1), (64, 256, 256, 1), (512, 256, 256, 1)}
    with pytest.raises(ValueError, match="fixed list of shapes"):
        get_preset("peers").points(overrides={"depths": [2]})
    with pytest.raises(ValueError, match="unknown preset 'nope'; expected one of: quick"):
        get_preset("nope")


def _dims(name):
    return {(p.depth, p.d_in, p.width, p.d_out, p.batch) for p in get_preset(name).points()}


def test_workload_presets_hold_the_shapes_users_know():
    assert _dims("textbook") == {
        (10, 2, 30, 10, 1),
        (3, 1000, 1000, 1, 1),
        (5, 1000, 1000, 1, 1),
        (10, 1000, 1000, 1, 1),
    }
    for depth, d_in, width, d_out, batch in _dims("pinn"):
        assert 4 <= depth <= 8 and d_in in (2, 3) and width in (64, 128) and d_out in (1, 2, 3)
        assert 1024 <= batch <= 8192
    assert (4, 784, 256, 10, 64) in _dims("classifier")
    assert {(d_in, d_out) for _, d_in, _, d_out, _ in _dims("flow")} == {
        (n, n) for n in (64, 128, 256, 512)
    }
