"""Storage formats per fiber from Python (SPEC §4): Brain.set_fiber_format,
the format keywords of add_area, and what memory_report says about them."""

import pytest

import kcap

pytestmark = pytest.mark.skipif(
    "explicit" not in kcap.AVAILABLE_ENGINES, reason="the explicit engine is not in this build"
)

N, K, P = 4000, 40, 0.05
REFERENCE = "f32/u32/csr/nearest/f32"


def _two_explicit_areas():
    b = kcap.Brain(P, seed=5)
    b.add_stimulus("s", K)
    b.add_area("E", N, K, 0.05, engine="explicit")
    b.add_area("F", N, K, 0.05, engine="explicit")
    b.add_area("L", 100_000, K, 0.05)
    return b


def _report(b):
    return {(f["from"], f["to"]): f for f in b.memory_report()}


def test_each_fiber_gets_its_own_format_and_the_memory_report_shows_it():
    b = _two_explicit_areas()
    before = _report(b)
    assert set(before) == {("E", "E"), ("E", "F"), ("F", "E"), ("F", "F")}
    assert all(f["format"] == REFERENCE for f in before.values())
    b.set_fiber_format("E", "F", weights="log-u8", indices="u16")
    b.set_fiber_format("F", "E", weights="bit", layout="bitmap")
    b.set_fiber_format("E", "E", rounding="stochastic", accumulator="fixed", weights="bf16")
    b.set_fiber_format("F", "F", weights="auto")
    after = _report(b)
    assert after[("E", "F")]["format"] == "log-u8/u16/csr/nearest/f32"
    assert after[("F", "E")]["format"] == "bit/u32/bitmap/nearest/f32"
    assert after[("E", "E")]["format"] == "bf16/u32/csr/stochastic/fixed"
    assert after[("F", "F")]["reasons"], "the planner explains its choice"
    for key, f in after.items():
        # The same graph in another format: synapse counts do not change.
        assert f["synapses"] == before[key]["synapses"] > 0.9 * N * N * P, key
        assert f["reference_bytes"] == 8 * f["synapses"]
    # log-u8 weights (1 byte) + block-local u16 indices (2 bytes) ~ 3 bytes per synapse.
    per_syn = after[("E", "F")]["bytes"] / after[("E", "F")]["synapses"]
    assert 2.9 < per_syn < 3.3, per_syn
    # Bitmap rows: n bits per row, i.e. 1/(8p) = 2.5 bytes per synapse at p = 0.05.
    per_syn = after[("F", "E")]["bytes"] / after[("F", "E")]["synapses"]
    assert 2.3 < per_syn < 2.8, per_syn
    assert after[("E", "E")]["bytes"] < 0.8 * before[("E", "E")]["bytes"]
    # Setting the reference format back restores the reference's bytes.
    b.set_fiber_format("E", "F")
    assert _report(b)[("E", "F")] == before[("E", "F")]
    b.project({"s": ["E"]}, {})
    b.project({"s": ["E"]}, {"E": ["E", "F", "L"]})
    b.project({"s": ["E"]}, {"E": ["E", "F"], "F": ["E", "F"]})
    assert [len(b.winners(a)) for a in ("E", "F", "L")] == [K, K, K]


def test_add_area_takes_every_format_keyword():
    b = kcap.Brain(P, seed=1)
    b.add_area("E", N, K, 0.05, engine="explicit", weights="bit", layout="bitmap", accumulator="fixed")
    assert _report(b)[("E", "E")]["format"] == "bit/u32/bitmap/nearest/fixed"


@pytest.mark.parametrize(
    "keywords, exc, message",
    [
        ({"layout": "coo"}, ValueError, 'unknown layout "coo": accepted values are "csr", "bitmap"'),
        ({"accumulator": "f64"}, ValueError, '"f32", "fixed"'),
        ({"weights": "f8"}, ValueError, '"log-u8", "bit", "auto"'),
        ({"weights": "auto", "indices": "u16"}, ValueError, "do not combine it with"),
        ({"layout": "bitmap"}, ValueError, 'use weights = "bit"'),
    ],
)
def test_bad_format_values_are_clear_errors(keywords, exc, message):
    b = _two_explicit_areas()
    before = b.memory_report()
    with pytest.raises(exc, match=message):
        b.set_fiber_format("E", "F", **keywords)
    assert b.memory_report() == before


def test_bad_fibers_are_clear_errors():
    b = _two_explicit_areas()
    before = b.memory_report()
    with pytest.raises(kcap.UnknownNameError, match='unknown area \\(target\\) "Z"'):
        b.set_fiber_format("E", "Z", weights="f16")
    with pytest.raises(KeyError, match='unknown area \\(source\\) "Y"'):
        b.set_fiber_format("Y", "E", weights="f16")
    with pytest.raises(kcap.InvalidParameterError, match='"s" is a stimulus'):
        b.set_fiber_format("s", "E", weights="f16")
    with pytest.raises(ValueError, match='"L" is a lazy area; storage formats apply to fibers between two explicit areas'):
        b.set_fiber_format("E", "L", weights="f16")
    assert b.memory_report() == before
    b.project({"s": ["E"]}, {})
    with pytest.raises(RuntimeError, match="after the first step"):
        b.set_fiber_format("E", "F", weights="f16")
    assert b.memory_report() == before
