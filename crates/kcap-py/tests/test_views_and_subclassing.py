"""`Brain` can be subclassed as existing tools do, and area objects are live
views: what is read is the simulation now, what is assigned changes it."""

import gc
import weakref

import numpy as np
import pytest

import kcap
from conftest import BETA, K, N, P


class LanguageBrain(kcap.Brain):
    """A tool-style subclass: its own signature, state and methods."""

    def __init__(self, p, lexicon, beta=0.1, seed=0):
        kcap.Brain.__init__(self, p, save_winners=True, seed=seed)
        self.lexicon = list(lexicon)
        self.steps_taken = 0
        self.add_area("LEX", 10_000, 50, beta)
        for word in self.lexicon:
            self.add_stimulus(word, 50)

    def project(self, areas_by_stim, dst_areas_by_src_area, verbose=0):
        self.steps_taken += 1
        super().project(areas_by_stim, dst_areas_by_src_area, verbose)

    def read_word(self, word, rounds=5):
        self.project({word: ["LEX"]}, {})
        for _ in range(rounds - 1):
            self.project({word: ["LEX"]}, {"LEX": ["LEX"]})
        return self.area_by_name["LEX"].winners


def test_subclass_with_its_own_constructor():
    b = LanguageBrain(0.05, ["dog", "cat"], seed=4)
    assert isinstance(b, kcap.Brain)
    assert b.lexicon == ["dog", "cat"] and b.p == 0.05 and b.seed == 4
    assert b.save_winners is True
    assert b.stimulus_size_by_name == {"dog": 50, "cat": 50}
    w = b.read_word("dog")
    assert len(w) == 50
    assert b.steps_taken == 5 and b.steps == 5
    assert len(b.area_by_name["LEX"].saved_winners) == 5


def test_overridden_methods_are_used_by_the_subclass_only():
    b = LanguageBrain(0.05, ["dog"])
    kcap.project_rounds(b, "dog", "LEX", 3)  # a Rust call: not through the override
    assert b.steps_taken == 0 and b.steps == 3


def test_subclass_using_super_init_and_keywords():
    class Seeded(kcap.Brain):
        def __init__(self, *, p, tag):
            super().__init__(p, seed=9)
            self.tag = tag

    b = Seeded(p=0.01, tag="x")
    assert (b.tag, b.seed, b.p) == ("x", 9, 0.01)


def test_subclass_without_init_uses_brains():
    class Plain(kcap.Brain):
        def total_support(self):
            return sum(a.w for a in self.area_by_name.values())

    b = Plain(0.05, save_winners=True)
    b.add_stimulus("s", 10)
    b.add_area("A", 1000, 10, 0.1)
    b.project({"s": ["A"]}, {})
    assert b.total_support() == 10 and b.save_winners


def test_subclass_that_forgets_init_gets_a_clear_error():
    class Forgetful(kcap.Brain):
        def __init__(self, p):
            self.p_wanted = p

    b = Forgetful(0.1)
    with pytest.raises(RuntimeError, match=r"must call Brain.__init__\(self, p"):
        b.add_area("A", 100, 10, 0.1)
    assert "not initialised" in repr(b)


def test_brain_instances_take_attributes_like_the_reference_class():
    b = kcap.Brain(0.1)
    b.note = "anything"
    assert b.note == "anything"


def test_view_taken_early_reads_the_current_state(brain):
    a = brain.area_by_name["A"]
    assert a.w == 0
    brain.project({"s": ["A"]}, {})
    assert a.w == K and len(a.winners) == K
    assert a.winners == brain.winners("A").tolist()


@pytest.mark.parametrize(
    "convert",
    [list, set, tuple, np.array, lambda w: np.array(w, dtype=np.uint32), lambda w: np.array(w, dtype=np.int32),
     lambda w: (x for x in w), lambda w: [np.int64(x) for x in w]],
    ids=["list", "set", "tuple", "ndarray-int64", "ndarray-uint32", "ndarray-int32", "generator", "numpy-scalars"],
)
def test_assigning_winners_changes_the_simulation(trained, convert):
    a = trained.area_by_name["A"]
    half = a.winners[::2]
    a.winners = convert(half)
    assert a.winners == sorted(half)
    assert trained.winners("A").tolist() == sorted(half)
    # The next step fires exactly these: B's input comes from half of A.
    trained.project({}, {"A": ["B"]})
    assert len(trained.area_by_name["B"].winners) == K


def _trained_copy(seed=11):
    b = kcap.Brain(P, seed=seed)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    kcap.project_rounds(b, "s", "A", 10)
    return b


def test_the_assigned_subset_is_what_fires_next():
    first, second, third = _trained_copy(), _trained_copy(), _trained_copy()
    assembly = first.area_by_name["A"].winners
    first.area_by_name["A"].winners = assembly[: K // 2]
    second.area_by_name["A"].winners = np.array(assembly[: K // 2])
    third.area_by_name["A"].winners = assembly[K // 2:]
    for b in (first, second, third):
        b.project({}, {"A": ["A"]})
        assert len(b.area_by_name["A"].winners) == K, "a step restores k winners"
    assert first.winners("A").tolist() == second.winners("A").tolist()
    assert first.winners("A").tolist() != third.winners("A").tolist()


def test_fix_assembly_on_the_view_freezes_the_area(trained):
    trained.area_by_name["A"].fix_assembly()
    before = trained.winners("A").tolist()
    for _ in range(3):
        trained.project({"s": ["A"]}, {"A": ["A"]})
    assert trained.winners("A").tolist() == before
    trained.area_by_name["A"].unfix_assembly()
    trained.project({"s": ["A"]}, {"A": ["A"]})
    assert trained.area_by_name["A"].fixed_assembly is False


def test_views_compare_by_brain_and_area(brain):
    assert brain.area_by_name["A"] == brain.areas["A"] == brain.area("A")
    assert brain.area_by_name["A"] != brain.area_by_name["B"]
    other = kcap.Brain(P)
    other.add_area("A", N, K, BETA)
    assert other.area_by_name["A"] != brain.area_by_name["A"]
    assert len({brain.area_by_name["A"], brain.areas["A"]}) == 1
    assert repr(brain.area_by_name["A"]).startswith('<kcap.Area "A" n=10000 k=100')


def test_a_view_keeps_its_brain_alive():
    b = kcap.Brain(P)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    a = b.area_by_name["A"]
    del b
    gc.collect()
    assert a.w == 0 and a.k == K


def test_freed_brain_is_collected_by_reference_counting():
    gc.disable()
    try:
        b = kcap.Brain(P)
        b.add_area("A", N, K, BETA)
        _ = [b.area_by_name["A"] for _ in range(3)], b.areas
        ref = weakref.ref(b)
        del b, _
        assert ref() is None, "no reference cycle between a brain and its views"
    finally:
        gc.enable()
