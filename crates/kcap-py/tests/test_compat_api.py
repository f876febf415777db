"""The reference-compatible API: every item of the drop-in `Brain` and `Area`,
with the reference's semantics (what `saved_w`, `saved_winners`,
`num_first_winners` hold and when they are appended, the map formats of
`update_plasticities`, ...)."""

import types

import numpy as np
import pytest

import kcap
from conftest import BETA, K, N, P


def test_constructor_defaults_match_the_reference():
    b = kcap.Brain(0.01)
    assert b.p == 0.01
    assert b.save_size is True
    assert b.save_winners is False
    assert b.seed == 0
    assert b.device == "cpu"
    assert b.disable_plasticity is False
    assert len(b.area_by_name) == 0
    assert b.stimulus_size_by_name == {}


def test_constructor_takes_the_reference_arguments_positionally_and_by_keyword():
    b = kcap.Brain(0.05, False, True, 7)
    assert (b.save_size, b.save_winners, b.seed) == (False, True, 7)
    b = kcap.Brain(p=0.05, save_size=True, save_winners=True, seed=3, device="cpu")
    assert (b.save_size, b.save_winners, b.seed) == (True, True, 3)


def test_add_stimulus_and_area(brain):
    assert brain.stimulus_size_by_name == {"s": K}
    a = brain.area_by_name["A"]
    assert (a.name, a.n, a.k, a.beta) == ("A", N, K, BETA)
    assert a.w == 0
    assert a.winners == []
    assert a.saved_w == [] and a.saved_winners == []
    assert a.num_first_winners == -1
    assert a.fixed_assembly is False
    assert a.explicit is False and a.engine == "lazy"


def test_sizes_written_as_integral_floats_are_accepted():
    b = kcap.Brain(0.01)
    b.add_stimulus("s", 1e2)
    b.add_area("A", 1e5, 100, 0.05)
    assert b.area_by_name["A"].n == 100_000
    assert b.stimulus_size_by_name["s"] == 100


def test_add_area_takes_engine_lazy():
    b = kcap.Brain(0.01)
    b.add_area("A", 1000, 10, 0.1, engine="lazy")
    assert b.area_by_name["A"].engine == "lazy"


def test_project_first_step_creates_k_winners(brain):
    brain.project({"s": ["A"]}, {})
    a = brain.area_by_name["A"]
    assert len(a.winners) == K
    assert all(isinstance(w, int) for w in a.winners)
    assert a.w == K
    assert a.num_first_winners == K
    assert a.saved_w == [K]


@pytest.mark.parametrize(
    "targets",
    [["A", "B"], ("A", "B"), {"A", "B"}, (t for t in ["A", "B"]), {"A": 1, "B": 2}.keys(), iter(["A", "B"])],
    ids=["list", "tuple", "set", "generator", "dict_keys", "iterator"],
)
def test_project_accepts_any_iterable_of_names(brain, targets):
    brain.project({"s": targets}, {})
    assert len(brain.area_by_name["A"].winners) == K
    assert len(brain.area_by_name["B"].winners) == K


def test_project_accepts_a_single_name_string_and_mappings(brain):
    brain.project(types.MappingProxyType({"s": "A"}), {})
    assert len(brain.area_by_name["A"].winners) == K
    brain.project({}, types.MappingProxyType({"A": "B"}))
    assert len(brain.area_by_name["B"].winners) == K


def test_project_with_nothing_changes_nothing(brain):
    brain.project({}, {})
    assert brain.area_by_name["A"].saved_w == []


def test_project_accepts_verbose(brain):
    brain.project({"s": ["A"]}, {}, verbose=0)
    brain.project({"s": ["A"]}, {}, 2)


def test_saved_w_is_appended_once_per_step_into_the_area(trained):
    a, b = trained.area_by_name["A"], trained.area_by_name["B"]
    assert len(a.saved_w) == 10 and b.saved_w == []
    assert a.saved_w[-1] == a.w
    assert a.saved_w == sorted(a.saved_w), "support never shrinks"
    trained.project({}, {"A": ["B"]})  # A fires but is not a target
    assert len(a.saved_w) == 10
    assert b.saved_w == [b.w]


def test_saved_w_follows_save_size_at_each_step(brain):
    brain.save_size = False
    brain.project({"s": ["A"]}, {})
    assert brain.area_by_name["A"].saved_w == []
    brain.save_size = True
    brain.project({"s": ["A"]}, {"A": ["A"]})
    brain.save_size = False
    brain.project({"s": ["A"]}, {"A": ["A"]})
    assert len(brain.area_by_name["A"].saved_w) == 1


def test_saved_winners_hold_the_winners_of_every_step_when_asked():
    b = kcap.Brain(P, save_winners=True, seed=2)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    b.project({"s": ["A"]}, {})
    first = b.area_by_name["A"].winners
    b.project({"s": ["A"]}, {"A": ["A"]})
    saved = b.area_by_name["A"].saved_winners
    assert len(saved) == 2
    assert saved[0] == first
    assert saved[1] == b.area_by_name["A"].winners
    assert all(isinstance(w, list) for w in saved)


def test_saved_winners_stay_empty_unless_asked_and_start_when_switched_on(brain):
    brain.project({"s": ["A"]}, {})
    assert brain.area_by_name["A"].saved_winners == []
    brain.save_winners = True
    brain.project({"s": ["A"]}, {"A": ["A"]})
    assert brain.area_by_name["A"].saved_winners == [brain.area_by_name["A"].winners]
    brain.add_area("C", N, K, BETA)  # areas added later record too
    brain.project({"s": ["C"]}, {})
    assert len(brain.area_by_name["C"].saved_winners) == 1


def test_areas_can_be_added_after_steps_as_in_the_reference(brain):
    brain.project({"s": ["A"]}, {})
    brain.add_area("C", N, K, BETA)
    brain.project({}, {"A": ["C"]})
    assert len(brain.area_by_name["C"].winners) == K


def test_num_first_winners_counts_new_neurons_of_the_last_step(trained):
    a = trained.area_by_name["A"]
    diffs = np.diff([0] + a.saved_w)
    assert a.num_first_winners == diffs[-1]


def test_a_fixed_area_keeps_its_winners_and_still_records(trained):
    trained.save_winners = True
    a = trained.area_by_name["A"]
    a.fix_assembly()
    assert a.fixed_assembly is True
    before = a.winners
    trained.project({"s": ["A"]}, {"A": ["A"]})
    assert a.winners == before
    assert a.saved_winners[-1] == before
    assert a.num_first_winners == 0
    a.unfix_assembly()
    assert a.fixed_assembly is False


def test_fixed_assembly_is_assignable(trained):
    a = trained.area_by_name["A"]
    a.fixed_assembly = True
    before = a.winners
    trained.project({"s": ["A"]}, {"A": ["A"]})
    assert a.winners == before
    a.fixed_assembly = False
    assert trained.area_by_name["A"].fixed_assembly is False


def test_activate_fires_assembly_index_and_fixes_it(brain):
    brain.activate("A", 2)
    a = brain.area_by_name["A"]
    assert a.winners == list(range(2 * K, 3 * K))
    assert a.fixed_assembly is True
    assert a.w == 3 * K
    brain.project({}, {"A": ["A", "B"]})
    assert a.winners == list(range(2 * K, 3 * K))
    assert len(brain.area_by_name["B"].winners) == K


def _run(brain, steps=6, recurrent=True):
    brain.project({"s": ["A"]}, {})
    for _ in range(steps - 1):
        brain.project({"s": ["A"]}, {"A": ["A"]} if recurrent else {})
    return brain.area_by_name["A"].saved_w


def _fresh(seed=5):
    b = kcap.Brain(P, seed=seed)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    return b


def test_disable_plasticity_turns_hebbian_updates_off():
    off = _fresh()
    off.disable_plasticity = True
    assert off.disable_plasticity is True and off.plasticity is False
    on = _fresh()
    # Without learning the same stimulus keeps recruiting new neurons.
    assert _run(off, 10, recurrent=False)[-1] > _run(on, 10, recurrent=False)[-1]


def test_update_plasticities_uses_the_reference_map_format():
    b = _fresh()
    b.update_plasticities(area_update_map={"A": [("A", 0.0)]}, stim_update_map={"A": [("s", 0.0)]})
    assert b.area_by_name["A"].beta_by_area == {"A": 0.0}
    assert b.area_by_name["A"].beta_by_stimulus == {"s": 0.0}
    # beta 0 on every fiber into A is exactly "plasticity off" for this run.
    off = _fresh()
    off.disable_plasticity = True
    assert _run(b) == _run(off)
    assert b.area_by_name["A"].winners == off.area_by_name["A"].winners


def test_update_plasticity_changes_one_fiber():
    b = _fresh()
    b.add_area("B", N, K, BETA)
    b.update_plasticity("A", "B", 0.3)
    assert b.area_by_name["B"].beta_by_area == {"A": 0.3, "B": BETA}
    assert b.area_by_name["A"].beta_by_area == {"A": BETA, "B": BETA}


def test_betas_are_kept_while_plasticity_is_disabled():
    b = _fresh()
    b.disable_plasticity = True
    assert b.area_by_name["A"].beta_by_stimulus == {"s": BETA}


def test_area_beta_assignment_changes_the_default_for_later_sources_only():
    b = _fresh()
    a = b.area_by_name["A"]
    a.beta = 0.2
    assert a.beta == 0.2
    assert a.beta_by_stimulus == {"s": BETA}, "existing fibers keep their beta, as in the reference"
    b.add_stimulus("t", K)
    assert a.beta_by_stimulus == {"s": BETA, "t": 0.2}


def test_area_level_beta_updates():
    b = _fresh()
    a = b.area_by_name["A"]
    a.update_area_beta("A", 0.4)
    a.update_beta_by_stimulus("s", 0.6)
    assert a.beta_by_area == {"A": 0.4} and a.beta_by_stimulus == {"s": 0.6}
    # the older reference's names of the same dicts
    assert a.area_beta == {"A": 0.4} and a.stimulus_beta == {"s": 0.6}


def test_get_num_ever_fired_is_the_support(trained):
    a = trained.area_by_name["A"]
    assert a.get_num_ever_fired() == a.w == trained.support("A")


def test_areas_is_the_older_name_of_area_by_name(trained):
    assert trained.areas["A"].winners == trained.area_by_name["A"].winners


def test_area_by_name_is_a_mapping(brain):
    m = brain.area_by_name
    assert len(m) == 2
    assert "A" in m and "Z" not in m and 3 not in m
    assert list(m) == ["A", "B"] == m.keys()
    assert [a.name for a in m.values()] == ["A", "B"]
    assert [(n, a.name) for n, a in m.items()] == [("A", "A"), ("B", "B")]
    assert m.get("Z") is None and m.get("Z", 5) == 5
    assert m.get("A").name == "A"
    assert {name: area.k for name, area in brain.area_by_name.items()} == {"A": K, "B": K}


def test_copying_a_brain_is_pickling_its_checkpoint(brain):
    import copy
    import pickle

    # Details in test_checkpoints.py; here: the reference's copy idioms work.
    brain.project({"s": ["A"]}, {})
    for clone in (copy.deepcopy(brain), pickle.loads(pickle.dumps(brain))):
        assert clone.area_by_name["A"].winners == brain.area_by_name["A"].winners
        assert clone is not brain
