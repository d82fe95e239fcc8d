"""The options package: construction validates every option (errors name the option, what it
must be and the value), the layer selectors, the CLI specs built from the field declarations,
and the dict round trip a report stores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from weightspectra.enums import EigenMethod, LayerType, Precision
from weightspectra.errors import OptionError
from weightspectra.options import Options, option_specs, selects

BAD_VALUES: list[tuple[str, Any, str]] = [
    ("workers", 0, "workers must be a positive integer"),
    ("workers", True, "workers must be a positive integer"),
    ("min_evals", 0, "min_evals must be a positive integer"),
    ("max_evals", 2.5, "max_evals must be a positive integer"),
    ("min_tail", 1, "min_tail must be None or an integer ≥ 2"),
    ("seed", -1, "seed must be an integer ≥ 0"),
    ("bootstrap", 5, "bootstrap must be 0 (off) or an integer ≥ 10"),
    ("max_fingers", 0, "max_fingers must be a positive integer"),
    ("collapse_min_group", 1, "collapse_min_group must be an integer ≥ 2"),
    ("farms_ratio", 0.5, "farms_ratio must be a finite number ≥ 1"),
    ("farms_stride", 0.0, "farms_stride must be a fraction in (0, 1]"),
    ("farms_stride", 1.5, "farms_stride must be a fraction in (0, 1]"),
    ("farms_window", 1, "farms_window must be None"),
    ("tw_multiplier", float("inf"), "tw_multiplier must be a positive finite number"),
    ("spike_rel_gap", -0.1, "spike_rel_gap must be a finite number ≥ 0"),
    ("ci_level", 1.0, "ci_level must be a number in (0, 1)"),
    ("p_threshold", 0.0, "p_threshold must be a number in (0, 1)"),
    ("spurious_alpha", 1.0, "spurious_alpha must be a finite number > 1"),
    ("mp_fit", 1, "mp_fit must be True or False"),
    ("cache", "  ", "cache must be a folder path"),
    ("precision", "float16", "precision"),
    ("eig_method", "qr", "eig_method"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_VALUES)
def test_a_bad_value_names_the_option_and_the_value(name: str, value: Any, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        Options(**{name: value})
    text = str(caught.value)
    assert message in text
    assert repr(value) in text or str(value) in text


def test_defaults_are_valid_and_cross_checks_hold() -> None:
    options = Options()
    assert options.workers == 1 and options.precision is Precision.FLOAT64
    with pytest.raises(OptionError, match="max_evals=4 is below min_evals=8"):
        Options(max_evals=4)
    with pytest.raises(OptionError, match=r"heavy_share=0\.1 is below bulk_decay_share"):
        Options(heavy_share=0.1, bulk_decay_share=0.2)
    with pytest.raises(OptionError, match="over_trained_alpha < under_trained_alpha"):
        Options(over_trained_alpha=5.0, under_trained_alpha=4.0)


def test_strings_become_enums_and_the_dict_round_trips() -> None:
    options = Options.from_kwargs(
        precision="float32", eig_method="svd", layers=["dense", 3, r"attn\."]
    )
    assert options.precision is Precision.FLOAT32 and options.eig_method is EigenMethod.SVD
    assert options.layers == (LayerType.DENSE, 3, r"attn\.")
    stored = json.loads(json.dumps(options.to_dict()))
    assert stored["precision"] == "float32" and stored["layers"] == ["dense", 3, r"attn\."]
    assert Options.from_dict(stored) == options
    # keys of another version are ignored, not fatal
    assert Options.from_dict({**stored, "option_of_a_later_version": 1}) == options


def test_replace_rejects_unknown_options_listing_the_valid_ones() -> None:
    unknown = r"unknown option\(s\) wrokers; valid options are .*workers"
    with pytest.raises(OptionError, match=unknown):
        Options().replace(wrokers=2)
    assert Options().replace(workers=2).workers == 2


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (-2, "layer id -2 is negative; use exclude=\\[2\\]"),
        (True, "True is not a layer id"),
        ("attn(", "neither a layer type"),
        (2.5, "is not a layer id \\(int\\)"),
    ],
)
def test_bad_selectors_are_named(item: Any, message: str) -> None:
    with pytest.raises(OptionError, match=f"exclude: .*{message}"):
        Options.from_kwargs(exclude=[item])


def test_selects_by_id_type_and_pattern() -> None:
    selector = Options.from_kwargs(layers=[0, "conv2d", r"\.q_proj$"]).layers
    assert selector is not None
    assert selects(selector, 0, "embed", LayerType.EMBEDDING)
    assert selects(selector, 5, "features.3", LayerType.CONV2D)
    assert selects(selector, 7, "model.layers.0.self_attn.q_proj", LayerType.DENSE)
    assert not selects(selector, 7, "model.layers.0.self_attn.q_proj_extra", LayerType.DENSE)
    assert Options.from_kwargs(layers="dense").layers == (
        LayerType.DENSE,
    )  # one item, not a sequence


def test_every_field_is_offered_on_the_command_line() -> None:
    specs = {s.name: s for s in option_specs()}
    assert set(specs) == set(Options().to_dict())
    assert specs["mp_fit"].kind == "bool"
    # a switch that is on by default is turned off by --no-...
    on_by_default = [s for s in specs.values() if s.kind == "bool" and s.default is True]
    assert on_by_default and all(s.flag.startswith("--no-") for s in on_by_default)
    assert specs["precision"].choices == tuple(p.value for p in Precision)
    assert specs["precision"].default == "float64"
    assert all(s.help.strip() for s in specs.values())
