"""A sweep's settings: options resolved once, recorded in meta.json, read back the same."""

import dataclasses
import json
from pathlib import Path

import pytest

from jacbench.runs import results
from jacbench.runs.options import SweepOptions
from jacbench.runs.settings import Build, Settings, Timing, resolve

RESULTS = Path(__file__).parent.parent / "results"


def test_options_resolve_once_into_nested_settings():
    settings = resolve(
        SweepOptions.from_keywords(
            dict(depths=[2, 3], d_in=[4], width=[8], d_out=[1], methods=["reverse"], seed=3)
        )
    )
    assert [p.widths for p in settings.points] == [(4, 8, 8, 1), (4, 8, 8, 8, 1)]
    assert [m.name for m in settings.methods] == ["reverse"]
    assert settings.build == Build(seed=3, init="lecun", activation="tanh")
    assert settings.timing == Timing(min_time=0.1)  # the quick preset's
    assert settings.operator == "jacobian" and settings.validate


def test_to_meta_is_the_layout_read_settings_reads_back():
    settings = resolve(
        SweepOptions.from_keywords(
            dict(preset="pinn-laplacian", methods=["forward-laplacian"], rounds=3, min_time=0.2)
        )
    )
    meta = json.loads(json.dumps({"settings": settings.to_meta()}))  # as the file holds it
    recorded = results.read_settings(meta)
    assert recorded == settings.to_meta()
    assert recorded["operator"] == "laplacian"
    assert recorded["grid"]["depths"] is None  # the preset's grid, not given
    assert recorded["timing"]["rounds"] == 3 and recorded["timing"]["min_time"] == 0.2
    assert results.settings_differences(recorded, settings.to_meta()) == []


def test_a_resume_repeats_every_setting_that_was_recorded():
    base = resolve(SweepOptions.from_keywords(dict(depths=[1], methods=["reverse"])))
    slower = dataclasses.replace(base, timing=Timing(min_time=1.0, rounds=5))
    assert results.settings_differences(base.to_meta(), slower.to_meta()) == [
        "timing.min_time: 0.1 → 1.0",
        "timing.rounds: 1 → 5",
    ]
    reseeded = dataclasses.replace(base, build=Build(seed=1))
    assert results.settings_differences(base.to_meta(), reseeded.to_meta()) == ["build.seed: 0 → 1"]
    # an older folder recorded no timing: none of it is compared
    older = {**base.to_meta(), "timing": {}}
    assert results.settings_differences(older, slower.to_meta()) == []


@pytest.mark.parametrize("run", ["cpu-seed", "cpu-peers", "cpu-pinn-laplacian"])
def test_an_older_folders_params_read_into_the_same_layout(run):
    meta = json.loads((RESULTS / run / "meta.json").read_text())
    recorded = results.read_settings(meta)
    params = meta["params"]
    assert recorded["preset"] == params["preset"]
    assert recorded["methods"] == params["methods"]
    assert recorded["build"] == {k: params[k] for k in ("seed", "init", "activation")}
    assert recorded["grid"]["dtype"] == params["dtype"]
    assert recorded["operator"] == params.get("operator", "jacobian")
    # the same run asked again today reads as the same settings
    options = SweepOptions.from_keywords(
        dict(preset=params["preset"], methods=params["methods"], dtype=params["dtype"])
    )
    again = Settings(options, (), (), recorded["operator"])
    asked = again.to_meta() | {"methods": params["methods"]}
    assert results.settings_differences(recorded, asked) == []


def test_a_merged_runs_record_keeps_its_parts_and_methods():
    legacy = {"params": {"merged": ["a", "b"], "methods": ["forward"]}}
    assert results.read_settings(legacy) == {"merged": ["a", "b"], "methods": ["forward"]}
    assert results.read_settings({"command": "x"}) == {}


def test_processes_sweep_the_resolved_settings():
    settings = resolve(SweepOptions.from_keywords(dict(depths=[1], processes=3, min_time=0.5)))
    child = settings.for_processes()
    assert child.processes == 1 and child.min_time == 0.5
    assert child.methods == tuple(m.name for m in settings.methods)
    assert resolve(child).to_meta()["methods"] == settings.to_meta()["methods"]


def test_the_options_of_a_recorded_run_make_the_same_settings():
    from jacbench.runs.settings import options_of

    asked = SweepOptions.from_keywords(
        dict(depths=[2, 3], d_in=[8], width=[16], d_out=[1, 4], methods=["forward", "reverse"],
             min_time=0.02, seed=3, rounds=2, peaks=False)
    )  # fmt: skip
    recorded = json.loads(json.dumps(resolve(asked).to_meta()))
    again = options_of(recorded)
    assert resolve(again).to_meta() == recorded
    assert again.depths == (2, 3) and again.seed == 3 and again.rounds == 2
    with pytest.raises(ValueError, match="merged run"):
        options_of({"merged": ["a"], "methods": []})
