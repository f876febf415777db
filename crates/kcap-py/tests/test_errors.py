"""Every mistake raises the exception type the reference raises for it (and
kcap's precise subclass of it), with a message that names the culprit; a
failed call changes nothing."""

import numpy as np
import pytest

import kcap
from conftest import BETA, K, N


def test_exception_hierarchy_matches_the_reference_types():
    assert issubclass(kcap.UnknownNameError, IndexError)
    assert issubclass(kcap.UnknownNameError, KeyError)
    assert issubclass(kcap.NoAssemblyError, ValueError)
    assert issubclass(kcap.AreaTooSmallError, RuntimeError)
    assert issubclass(kcap.InvalidParameterError, ValueError)
    assert issubclass(kcap.NotAvailableError, NotImplementedError)
    for e in (kcap.UnknownNameError, kcap.NoAssemblyError, kcap.AreaTooSmallError,
              kcap.InvalidParameterError, kcap.NotAvailableError):
        assert issubclass(e, kcap.KcapError)
        assert e.__module__ == "kcap"
    # Messages are not wrapped in quotes as KeyError's would be.
    assert str(kcap.UnknownNameError("unknown area 'X'")) == "unknown area 'X'"


def test_unknown_stimulus_is_an_index_error(brain):
    with pytest.raises(IndexError, match='unknown stimulus "nope"'):
        brain.project({"nope": ["A"]}, {})


def test_unknown_target_area_is_an_index_error(brain):
    with pytest.raises(kcap.UnknownNameError, match='unknown area "Z"'):
        brain.project({"s": ["A", "Z"]}, {})
    with pytest.raises(IndexError, match='unknown area "Z"'):
        brain.project({}, {"A": ["Z"]})


def test_unknown_source_area_is_an_index_error(trained):
    with pytest.raises(IndexError, match='unknown area "Z"'):
        trained.project({}, {"Z": ["A"]})


def test_names_in_the_wrong_dict_are_explained(trained):
    with pytest.raises(IndexError, match='"A" is an area, not a stimulus'):
        trained.project({"A": ["A"]}, {})
    with pytest.raises(IndexError, match='"s" is a stimulus, not an area'):
        trained.project({}, {"s": ["A"]})


def test_unknown_area_lookup_is_a_key_error(brain):
    with pytest.raises(KeyError, match="Z"):
        brain.area_by_name["Z"]
    with pytest.raises(IndexError):
        brain.areas["Z"]


def test_projecting_from_an_area_without_assembly_is_a_value_error(brain):
    with pytest.raises(ValueError, match='"A".*no winners') as e:
        brain.project({"s": ["B"]}, {"A": ["B"]})
    assert isinstance(e.value, kcap.NoAssemblyError)


def test_a_failed_step_changes_nothing(brain):
    with pytest.raises(ValueError):
        brain.project({"s": ["B"]}, {"A": ["B"]})
    assert brain.steps == 0
    assert brain.area_by_name["B"].winners == [] and brain.area_by_name["B"].saved_w == []


def test_area_too_small_is_a_runtime_error():
    b = kcap.Brain(0.1, seed=3)
    b.add_stimulus("s", 50)
    b.add_area("A", 300, 50, 0.1)
    b.activate("A", 4)  # neurons 0..250 exist: only 50 = k never fired
    b.area_by_name["A"].unfix_assembly()
    with pytest.raises(RuntimeError, match='"A" is too small') as e:
        b.project({"s": ["A"]}, {})
    assert isinstance(e.value, kcap.AreaTooSmallError)


def test_k_not_below_n_is_a_value_error():
    b = kcap.Brain(0.1)
    with pytest.raises(ValueError, match="k = 100 must be .* smaller than n = 100"):
        b.add_area("A", 100, 100, 0.1)


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5])
def test_p_outside_0_1_is_a_value_error(p):
    with pytest.raises(ValueError, match="p"):
        kcap.Brain(p)


def test_negative_beta_is_a_value_error():
    b = kcap.Brain(0.1)
    with pytest.raises(ValueError, match="beta"):
        b.add_area("A", 1000, 10, -0.1)


def test_duplicate_names_are_value_errors(brain):
    with pytest.raises(ValueError, match='"A" is already used'):
        brain.add_area("A", N, K, BETA)
    with pytest.raises(ValueError, match='"s" is already used'):
        brain.add_stimulus("s", 10)
    # one namespace for areas and stimuli (the reference has two)
    with pytest.raises(ValueError, match='"A" is already used'):
        brain.add_stimulus("A", 10)


def test_non_integer_sizes_are_value_errors():
    b = kcap.Brain(0.1)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        b.add_area("A", 1000.5, 10, 0.1)
    with pytest.raises(ValueError, match="stimulus size"):
        b.add_stimulus("s", -3)


def test_unknown_engine_lists_the_accepted_ones():
    b = kcap.Brain(0.1)
    with pytest.raises(ValueError, match='"lazy", "explicit", "procedural"'):
        b.add_area("A", 1000, 10, 0.1, engine="dense")


@pytest.mark.parametrize("engine", ["lazy", "explicit", "procedural"])
def test_engines_not_yet_built_say_so(engine):
    b = kcap.Brain(0.1)
    if engine in kcap.AVAILABLE_ENGINES:
        b.add_area("A", 1000, 10, 0.1, engine=engine)
        assert b.area_by_name["A"].engine == engine
    else:
        with pytest.raises(NotImplementedError, match="not available yet"):
            b.add_area("A", 1000, 10, 0.1, engine=engine)
        assert len(b.area_by_name) == 0


def test_available_engines_are_a_subset_of_the_accepted_ones():
    assert "lazy" in kcap.AVAILABLE_ENGINES
    assert set(kcap.AVAILABLE_ENGINES) <= set(kcap.ENGINES) == {"lazy", "explicit", "procedural"}


def test_unknown_tail_sampler_is_a_value_error():
    with pytest.raises(ValueError, match='"normal", "exact"'):
        kcap.Brain(0.1, tail="uniform")


@pytest.mark.skipif("explicit" in kcap.AVAILABLE_ENGINES, reason="this build has the explicit engine")
def test_explicit_areas_arrive_with_the_explicit_engine():
    b = kcap.Brain(0.1)
    with pytest.raises(NotImplementedError, match="explicit areas arrive with the explicit engine"):
        b.add_explicit_area("E", 1000, 10, 0.1, custom_inner_p=0.2, custom_out_p=0.1, custom_in_p=0.05)
    with pytest.raises(NotImplementedError, match="explicit areas arrive with the explicit engine"):
        b.add_explicit_area("E", 1000, 10, 0.1)
    assert "E" not in b.area_by_name


@pytest.mark.skipif("explicit" not in kcap.AVAILABLE_ENGINES, reason="the explicit engine is not in this build yet")
def test_add_explicit_area_builds_an_explicit_area():
    b = kcap.Brain(0.1)
    b.add_stimulus("s", 10)
    b.add_explicit_area("E", 1000, 10, 0.1, custom_inner_p=0.2)
    assert b.area_by_name["E"].explicit is True
    b.project({"s": ["E"]}, {})
    assert len(b.area_by_name["E"].winners) == 10


@pytest.mark.parametrize(
    "keyword, value, text",
    [
        ("weights", "f8", 'unknown weights "f8": accepted values are "f32", "f16", "bf16", "log-u8", "bit", "auto"'),
        ("indices", "i8", '"u32", "u16"'),
        ("rounding", "up", '"nearest", "stochastic"'),
    ],
)
def test_storage_format_keywords_are_validated(keyword, value, text):
    b = kcap.Brain(0.1)
    with pytest.raises(ValueError, match=text.replace("(", r"\(")):
        b.add_area("A", 1000, 10, 0.1, engine="explicit", **{keyword: value})
    with pytest.raises(ValueError, match="apply to explicit areas"):
        b.add_area("A", 1000, 10, 0.1, weights="f16")
    assert "A" not in b.area_by_name


def test_storage_formats_of_explicit_areas_and_memory_report():
    b = kcap.Brain(0.05, seed=3)
    b.add_stimulus("s", 50)
    b.add_area("E", 5000, 50, 0.05, engine="explicit", weights="log-u8", indices="u16")
    b.add_area("F", 5000, 50, 0.05, engine="explicit", weights="bf16", rounding="stochastic")
    rep = {(f["from"], f["to"]): f for f in b.memory_report()}
    assert rep[("E", "E")]["format"].startswith("log-u8/u16/csr")
    assert rep[("F", "F")]["format"].startswith("bf16/u32/csr/stochastic")
    assert rep[("E", "E")]["bytes"] < rep[("E", "E")]["reference_bytes"] / 2
    b.project({"s": ["E"]}, {})
    b.project({"s": ["E"]}, {"E": ["E", "F"]})
    assert len(b.area_by_name["F"].winners) == 50


def test_invalid_winner_assignments(trained):
    a = trained.area_by_name["A"]
    before = a.winners
    with pytest.raises(ValueError, match="has never fired"):
        a.winners = [a.w + 5]
    with pytest.raises(ValueError, match="at most k"):
        a.winners = list(range(K + 1))
    with pytest.raises(ValueError, match="repeats a neuron"):
        a.winners = [before[0], before[0]]
    with pytest.raises(ValueError, match="out of range"):
        a.winners = [-1]
    with pytest.raises(ValueError, match="out of range"):
        a.winners = np.array([-1, 2])
    with pytest.raises(TypeError, match="integers"):
        a.winners = [1.5]
    with pytest.raises(TypeError, match="integers"):
        a.winners = ["3"]
    with pytest.raises(TypeError, match="iterable"):
        a.winners = 3
    with pytest.raises(ValueError, match="one-dimensional"):
        a.winners = np.zeros((2, 2), dtype=np.int64)
    assert a.winners == before


def test_fixing_an_area_without_assembly_is_a_value_error(brain):
    with pytest.raises(ValueError, match='"A" has no assembly to fix'):
        brain.area_by_name["A"].fix_assembly()


def test_malformed_projection_arguments_are_type_errors(brain):
    with pytest.raises(TypeError, match="iterable of names"):
        brain.project({"s": 3}, {})
    with pytest.raises(TypeError, match="names"):
        brain.project({"s": [1]}, {})
    with pytest.raises(TypeError, match="dict"):
        brain.project(["s"], {})
    with pytest.raises(TypeError, match="keys"):
        brain.project({1: ["A"]}, {})


def test_update_plasticities_validates_everything_before_changing_anything(brain):
    with pytest.raises(IndexError, match='unknown area "Z"'):
        brain.update_plasticities(area_update_map={"A": [("A", 0.5), ("Z", 0.1)]})
    with pytest.raises(IndexError, match='unknown stimulus "A"'):
        brain.update_plasticities(stim_update_map={"A": [("A", 0.5)]})
    with pytest.raises(TypeError, match="pairs"):
        brain.update_plasticities(area_update_map={"A": ["A"]})
    with pytest.raises(ValueError, match="beta"):
        brain.update_plasticities(area_update_map={"A": [("A", 0.5), ("B", -1.0)]})
    assert brain.area_by_name["A"].beta_by_area == {"A": BETA, "B": BETA}


def test_update_plasticity_with_unknown_names(brain):
    with pytest.raises(IndexError):
        brain.update_plasticity("Z", "A", 0.1)
    with pytest.raises(IndexError):
        brain.update_plasticity("A", "Z", 0.1)


def test_activate_beyond_the_area_is_a_value_error(brain):
    with pytest.raises(ValueError, match="activate index"):
        brain.activate("A", N // K)
    with pytest.raises(IndexError):
        brain.activate("Z", 0)
