"""Figures draw exactly the tables they are given."""

from __future__ import annotations

import pandas as pd
import pytest

from probes.figures import first_token_mass_by_layer, policy_curves, sink_heatmap


def test_heatmap_and_curves_carry_the_table_values() -> None:
    table = pd.DataFrame(
        [
            {"layer": layer, "head": head, "alpha": layer / 10 + head / 100}
            for layer in range(3)
            for head in range(4)
        ]
    )
    heat = sink_heatmap(table)
    assert heat.data[0].z[2][3] == table.set_index(["layer", "head"]).alpha[(2, 3)]
    expected = [table[table.layer == layer].alpha.mean() for layer in range(3)]
    assert list(first_token_mass_by_layer(table).data[0].y) == pytest.approx(expected, abs=1e-12)
    curves = pd.DataFrame(
        [
            {"policy": p, "budget": b, "kl": b * (i + 1)}
            for i, p in enumerate(["h2o", "recent"])
            for b in (0.5, 0.1)
        ]
    )
    figure = policy_curves(curves, "kl", "Quality against budget")
    assert [t.name for t in figure.data] == ["h2o", "recent"]
    assert list(figure.data[1].x) == [0.1, 0.5] and list(figure.data[1].y) == [0.2, 1.0]


def test_compression_figures_mark_the_summary_layers() -> None:
    from probes.figures import depth_histogram, id_profile, lens_curves

    profile = pd.DataFrame({"layer": [0, 1, 2, 3], "twonn_90": [2.0, 5.0, 3.0, 4.0]})
    figure = id_profile(profile, {"abstraction_peak": 1, "semantic_minimum": 2})
    assert list(figure.data[0].y) == [2.0, 5.0, 3.0, 4.0]
    assert sorted(shape.x0 for shape in figure.layout.shapes) == [1, 2]
    lenses = pd.DataFrame(
        {"layer": [0, 1, 0, 1], "lens": ["logit", "logit", "tuned", "tuned"], "kl_to_final": [2, 0, 1, 0]}
    )
    assert [t.name for t in lens_curves(lenses).data] == ["logit", "tuned"]
    assert list(depth_histogram([0, 0, 3]).data[0].x) == [0, 0, 3]
