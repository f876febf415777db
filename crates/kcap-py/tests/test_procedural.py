"""Procedural areas from Python: add_area(..., engine="procedural"), u64
neuron ids (uint64 arrays, Python ints beyond 2^32), the operations,
checkpoints, and the library's mixing rules as clear errors."""

import pickle

import numpy as np
import pytest

import kcap

pytestmark = pytest.mark.skipif(
    "procedural" not in kcap.AVAILABLE_ENGINES, reason="the procedural engine is not in this build"
)

# Wider than u32 ids: 5e9 neurons, p = 1e-6 (5 000 synapses per source
# neuron). A step that selects winners scans every neuron (seconds at this
# n), so the wide area is driven through activate / fixed steps / assigned
# winners, which cost nothing; selection is exercised on narrower areas.
N, K, P = 5_000_000_000, 10, 1e-6


def _wide(seed=3, p=P):
    b = kcap.Brain(p, save_winners=True, seed=seed)
    b.add_stimulus("s", 20)
    b.add_area("P", N, K, 0.1, engine="procedural")
    return b


def test_procedural_area_has_uint64_winners_and_ids_beyond_u32():
    b = _wide()
    a = b.area_by_name["P"]
    assert a.engine == "procedural" and a.explicit is False and a.n == N
    assert b.winners("P").dtype == np.uint64 and a.winners == []
    b.activate("P", N // K - 1)  # the last K neurons, ids far above 2^32
    top = list(range(N - K, N))
    assert a.winners == top and a.fixed_assembly and a.w == K
    b.project({"s": ["P"]}, {})  # a fixed target keeps its winners (and learns)
    b.project({"s": ["P"]}, {"P": ["P"]})
    w = b.winners("P")
    assert w.dtype == np.uint64 and w.tolist() == top == a.winners_array().tolist()
    assert a.saved_winners == [top, top] and a.saved_w == [K, K]
    assert [h.dtype for h in b.winner_history("P")] == [np.uint64, np.uint64]
    assert [h.tolist() for h in b.winner_history("P")] == [top, top]
    # Any id < n exists in a procedural area: assigned ids count towards the support.
    low = [2**32 + i for i in range(K)]
    a.winners = np.array(low, dtype=np.uint64)
    assert a.winners == low and a.w == 2 * K
    b.set_winners("P", low[:4])
    assert b.winners("P").tolist() == low[:4]
    with pytest.raises(ValueError, match=f"neuron {N} does not exist"):
        a.winners = [N]
    with pytest.raises(ValueError, match="out of range"):
        a.winners = [2**64]
    assert f"n={N}" in repr(a) and "winners=4 fixed" in repr(a)


def test_operations_return_uint64_for_procedural_and_match_the_step_by_step_run():
    b = kcap.Brain(0.01, seed=7)
    b.add_stimulus("s", 50)
    b.add_area("P", 100_000, 50, 0.1, engine="procedural")  # fits u32, still uint64
    b.add_area("L", 100_000, 50, 0.1)
    w = kcap.project_rounds(b, "s", "P", 6)
    assert w.dtype == np.uint64 and kcap.project_rounds(b, "s", "L", 2).dtype == np.uint32
    r = kcap.Brain(0.01, seed=7)
    r.add_stimulus("s", 50)
    r.add_area("P", 100_000, 50, 0.1, engine="procedural")
    r.add_area("L", 100_000, 50, 0.1)
    r.project({"s": ["P"]}, {})
    for _ in range(5):
        r.project({"s": ["P"]}, {"P": ["P"]})
    assert np.array_equal(w, r.winners("P"))
    recovered = kcap.pattern_completion(b, "P", fraction=0.5, rounds=3)
    assert 0 <= recovered <= 50
    assert kcap.overlap(w, r.winners("P")) == 50
    b.add_area("P2", 100_000, 50, 0.1, engine="procedural")
    assert kcap.reciprocal_project(b, "s", "P", "P2", 2).dtype == np.uint64
    assert len(kcap.merge(b, ("s", "P"), ("s", "P2"), "P2", 1)) == 50
    assert kcap.overlap([2**40, 7], np.array([2**40], dtype=np.uint64)) == 1
    assert kcap.best_match([2**40 + 1], [[1], [2**40 + 1, 3]]) == (1, 1)


def test_procedural_brains_checkpoint_and_pickle_exactly(tmp_path):
    b = _wide(seed=11, p=1e-4)
    b.add_area("Q", 200_000, 20, 0.1, engine="procedural")
    b.activate("P", N // K - 2)
    b.project({"s": ["P", "Q"]}, {})
    b.project({"s": ["Q"]}, {"Q": ["Q"], "P": ["P", "Q"]})
    b.save(tmp_path / "p.kcap")
    restored = [kcap.load(tmp_path / "p.kcap"), pickle.loads(pickle.dumps(b))]
    assert any(f["to"] == "Q" and f["synapses"] > 0 for f in b.memory_report())
    # The learned synapses come back exactly; the bytes held are allocation
    # state (a restored map has no spare arena, no slack), not model state.
    def model_part(report):
        return [{k: v for k, v in f.items() if k != "bytes"} for f in report]

    for r in restored:
        assert model_part(r.memory_report()) == model_part(b.memory_report())
        assert all(f["bytes"] > 0 for f in r.memory_report() if f["synapses"] > 0)
        assert r.area_by_name["P"].saved_winners == b.area_by_name["P"].saved_winners
    for _ in range(4):
        for x in [b, *restored]:
            x.project({"s": ["Q"]}, {"Q": ["Q"], "P": ["P", "Q"]})
        for r in restored:
            for name in ("P", "Q"):
                assert np.array_equal(r.winners(name), b.winners(name)), name
                assert r.area_by_name[name].w == b.area_by_name[name].w


def test_mixing_rules_and_formats_are_clear_errors():
    b = kcap.Brain(0.01, seed=1)
    b.add_stimulus("s", 50)
    b.add_area("P", 100_000, 50, 0.1, engine="procedural")
    b.add_area("L", 100_000, 50, 0.1)
    b.add_area("E", 2_000, 50, 0.1, engine="explicit")
    b.project({"s": ["P", "L"]}, {})
    b.project({}, {"L": ["P"]})  # lazy (and explicit) sources into a procedural target are fine
    with pytest.raises(kcap.NotAvailableError, match="fiber P -> L: a procedural area cannot fire into a lazy area") as e:
        b.project({}, {"P": ["L"]})  # a procedural source into a lazy target is refused
    assert isinstance(e.value, NotImplementedError)
    assert b.steps == 2
    with pytest.raises(ValueError, match="apply to explicit areas .*not to procedural areas"):
        b.add_area("Q", 100_000, 50, 0.1, engine="procedural", weights="bf16")
    with pytest.raises(ValueError, match='"P" is a procedural area'):
        b.set_fiber_format("E", "P", weights="bf16")
    with pytest.raises(ValueError, match="k = 100000 must be at least 1 and smaller than n"):
        b.add_area("Q", 100_000, 100_000, 0.1, engine="procedural")
    assert b.area_names() == ["P", "L", "E"]
