"""A sweep's options as a caller gives them: keywords read into one frozen object."""

import pytest

from jacbench.runs.options import SweepOptions


def test_keywords_become_the_frozen_options():
    options = SweepOptions.from_keywords(
        dict(depths=[3, 5], dtype="float64", methods="reverse", params={"width": [16, 32], "k": 3})
    )
    assert options.depths == (3, 5)
    assert options.dtype == ("float64",) and options.dtypes == ["float64"]
    assert options.methods == ("reverse",)
    assert options.params == (("width", (16, 32)), ("k", (3,)))
    assert options.grid == {"depths": (3, 5), "d_in": None, "width": None, "d_out": None,
                            "batch": None}  # fmt: skip
    with pytest.raises(AttributeError):
        options.seed = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"depth": [3]}, "unknown option 'depth'; the options are: "),
        ({"depths": 3}, "depths takes a list, got 3"),
        ({"params": [1, 2]}, "params takes a mapping of names to lists"),
    ],
)
def test_a_bad_keyword_is_one_line(keywords, message):
    with pytest.raises(ValueError, match=message) as raised:
        SweepOptions.from_keywords(keywords)
    assert "\n" not in str(raised.value)
