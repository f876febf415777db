"""kcap's own API next to the drop-in one: NumPy results, per-fiber
parameters, the operations as single Rust calls, overlap measures,
`run(experiment_file)`, and the promise that a Python loop and a Rust call
compute the same thing."""

import json
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kcap
from conftest import BETA, K, N, P, REAL_KCAP, needs_cli, tiny_experiment


def test_winners_are_sorted_uint32_arrays(trained):
    w = trained.winners("A")
    assert isinstance(w, np.ndarray) and w.dtype == np.uint32 and w.shape == (K,)
    assert np.all(np.diff(w.astype(np.int64)) > 0)
    assert w.tolist() == trained.area_by_name["A"].winners
    assert np.array_equal(trained.area_by_name["A"].winners_array(), w)


def test_set_winners_and_support(trained):
    trained.set_winners("A", np.arange(10, dtype=np.int64))
    assert trained.winners("A").tolist() == list(range(10))
    assert trained.support("A") == trained.area_by_name["A"].w


def test_history_is_numpy_and_matches_saved_w(trained):
    h = trained.history("A")
    assert set(h) == {"step", "support", "first_winners"}
    assert h["step"].tolist() == list(range(1, 11))
    assert h["support"].tolist() == trained.area_by_name["A"].saved_w
    assert int(h["first_winners"].sum()) == trained.support("A")


def test_record_winners_per_area(brain):
    brain.record_winners("A")
    brain.project({"s": ["A", "B"]}, {})
    hist = brain.winner_history("A")
    assert len(hist) == 1 and hist[0].dtype == np.uint32
    assert hist[0].tolist() == brain.area_by_name["A"].saved_winners[0]
    assert brain.winner_history("B") == []
    brain.record_winners("A", False)
    brain.project({"s": ["A"]}, {})
    assert len(brain.winner_history("A")) == 1


def test_fix_and_unfix(trained):
    trained.fix("A")
    before = trained.winners("A").tolist()
    trained.project({"s": ["A"]}, {"A": ["A"]})
    assert trained.winners("A").tolist() == before
    trained.unfix("A")
    assert not trained.area_by_name["A"].fixed_assembly


def test_subsample_winners_is_seeded(trained):
    before = set(trained.winners("A").tolist())
    trained.subsample_winners("A", 30)
    kept = trained.winners("A").tolist()
    assert len(kept) == 30 and set(kept) <= before


def test_fiber_parameters():
    b = kcap.Brain(P, seed=1)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    b.set_fiber_p("s", "A", 0.1)
    b.set_beta("s", "A", 0.3)
    assert b.area_by_name["A"].beta_by_stimulus == {"s": 0.3}
    b.set_area_beta("A", 0.2)
    assert b.area_by_name["A"].beta == 0.2
    assert b.area_by_name["A"].beta_by_area == {"A": 0.2}
    b.project({"s": ["A"]}, {})
    with pytest.raises(RuntimeError, match="before the first step"):
        b.set_fiber_p("s", "A", 0.2)


def test_brain_properties(trained):
    assert trained.plasticity is True
    trained.plasticity = False
    assert trained.disable_plasticity is True
    assert trained.w_max is None
    trained.w_max = 2.0
    assert trained.w_max == 2.0
    with pytest.raises(ValueError, match="w_max"):
        trained.w_max = 0.5
    assert trained.steps == 10 and trained.seed == 1
    assert trained.device == "cpu" and trained.backend.startswith("cpu")
    assert trained.area_names() == ["A", "B"] and trained.stimulus_names() == ["s"]
    mem = trained.memory()
    assert set(mem) == {"area_synapses", "stimulus_entries", "bytes"} and mem["bytes"] > 0
    assert "steps=10" in repr(trained)


def test_w_max_and_tail_keywords():
    b = kcap.Brain(P, w_max=3.0, tail="exact", seed=2)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    kcap.project_rounds(b, "s", "A", 5)
    assert b.w_max == 3.0 and b.support("A") >= K


def _recurrent_run(seed):
    b = kcap.Brain(P, seed=seed, save_winners=True)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    b.project({"s": ["A"]}, {})
    for _ in range(9):
        b.project({"s": ["A"]}, {"A": ["A"]})
    return b


def test_same_seed_same_run_other_seed_other_run():
    assert _recurrent_run(3).area_by_name["A"].saved_winners == _recurrent_run(3).area_by_name["A"].saved_winners
    assert _recurrent_run(3).area_by_name["A"].winners != _recurrent_run(4).area_by_name["A"].winners


def test_project_rounds_is_the_python_loop_in_one_call():
    loop = _recurrent_run(8)
    one = kcap.Brain(P, seed=8, save_winners=True)
    one.add_stimulus("s", K)
    one.add_area("A", N, K, BETA)
    w = kcap.project_rounds(one, "s", "A", 10)
    assert w.dtype == np.uint32 and w.tolist() == loop.area_by_name["A"].winners
    assert one.area_by_name["A"].saved_w == loop.area_by_name["A"].saved_w
    assert one.area_by_name["A"].saved_winners == loop.area_by_name["A"].saved_winners


def test_ops_respect_save_size():
    b = kcap.Brain(P, save_size=False)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    kcap.project_rounds(b, "s", "A", 3)
    assert b.area_by_name["A"].saved_w == []


def _two_assemblies(seed=1):
    b = kcap.Brain(P, seed=seed)
    for s, a in (("sa", "A"), ("sb", "B")):
        b.add_stimulus(s, K)
        b.add_area(a, N, K, BETA)
    b.add_area("C", N, K, BETA)
    return b


def test_reciprocal_project():
    b = _two_assemblies()
    kcap.project_rounds(b, "sa", "A", 10)
    w = kcap.reciprocal_project(b, "sa", "A", "B", 10)
    assert w.shape == (K,) and w.tolist() == b.area_by_name["B"].winners
    assert b.steps == 20


def test_associate_runs_both_pairs_into_c():
    b = _two_assemblies()
    kcap.project_rounds(b, "sa", "A", 10)
    kcap.project_rounds(b, "sb", "B", 10)
    b.project({"sa": ["A"]}, {"A": ["A", "C"]})  # C needs an assembly of its own first
    kcap.associate(b, ("sa", "A"), ("sb", "B"), "C", 10)
    assert b.steps == 31 and len(b.area_by_name["C"].winners) == K
    assert len(b.area_by_name["C"].saved_w) == 11


def test_merge():
    b = _two_assemblies()
    w = kcap.merge(b, ("sa", "A"), ("sb", "B"), "C", 10)
    assert b.steps == 12 and w.tolist() == b.area_by_name["C"].winners


def test_pattern_completion_returns_recovered_count(trained):
    got = kcap.pattern_completion(trained, "A", 0.5, 3)
    assert isinstance(got, int) and 0 <= got <= K
    with pytest.raises(ValueError, match="fraction"):
        kcap.pattern_completion(trained, "A", 1.5, 3)


def test_ops_raise_the_reference_errors(brain):
    with pytest.raises(IndexError):
        kcap.project_rounds(brain, "nope", "A", 3)
    with pytest.raises(ValueError, match="rounds"):
        kcap.project_rounds(brain, "s", "A", 0)
    with pytest.raises(ValueError, match="no winners"):
        kcap.reciprocal_project(brain, "s", "A", "B", 3)  # A holds no assembly yet
    assert brain.steps == 0


def test_overlap_and_best_match():
    assert kcap.overlap([1, 2, 3], np.array([3, 4, 1])) == 2
    assert kcap.overlap(set(), [1]) == 0
    assert kcap.best_match([1, 2, 3], [[9], [1, 2], np.array([2, 3], dtype=np.uint32)]) == (1, 2)
    assert kcap.best_match([1], []) is None


def _fake_kcap(tmp_path, exit_code=0, stderr=""):
    """A stand-in `kcap` executable that records its arguments and writes a
    results.json into the --out folder."""
    script = tmp_path / "kcap"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        echo "$@" > "{tmp_path}/args"
        if [ {exit_code} -ne 0 ]; then echo "{stderr}" >&2; exit {exit_code}; fi
        while [ $# -gt 0 ]; do
            if [ "$1" = "--out" ]; then /bin/mkdir -p "$2"; echo '{{"name": "fake", "steps": 3}}' > "$2/results.json"; fi
            shift
        done
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_run_invokes_the_cli_and_returns_its_results(tmp_path, monkeypatch):
    fake = _fake_kcap(tmp_path)
    monkeypatch.setenv("KCAP_BIN", str(fake))
    out = tmp_path / "out"
    assert kcap.run("exp.toml", out=out, threads=2) == {"name": "fake", "steps": 3}
    assert (tmp_path / "args").read_text().split() == ["run", "exp.toml", "--out", str(out), "--quiet", "--threads", "2"]


def test_run_finds_kcap_on_path_and_takes_an_explicit_binary(tmp_path, monkeypatch):
    fake = _fake_kcap(tmp_path)
    monkeypatch.delenv("KCAP_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kcap.run("e.toml", out=tmp_path / "o")["name"] == "fake"
    monkeypatch.setenv("PATH", "")
    assert kcap.run("e.toml", out=tmp_path / "o", kcap_bin=fake)["steps"] == 3


def test_run_maps_the_cli_exit_codes(tmp_path, monkeypatch):
    monkeypatch.setenv("KCAP_BIN", str(_fake_kcap(tmp_path, 2, "bad.toml:3: unknown key")))
    with pytest.raises(ValueError, match="bad.toml:3: unknown key"):
        kcap.run("bad.toml", out=tmp_path / "o")
    monkeypatch.setenv("KCAP_BIN", str(_fake_kcap(tmp_path, 1, "area too small")))
    with pytest.raises(RuntimeError, match="area too small"):
        kcap.run("x.toml", out=tmp_path / "o")


def test_run_without_the_cli_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("KCAP_BIN", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(NotImplementedError, match="KCAP_BIN"):
        kcap.run("x.toml")


@needs_cli
def test_run_with_the_real_cli(tmp_path):
    exp = tiny_experiment(tmp_path / "tiny.toml")
    results = kcap.run(exp, out=tmp_path / "out", kcap_bin=REAL_KCAP)
    assert isinstance(results, dict)
    assert (tmp_path / "out" / "results.json").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == results
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 3\n")
    with pytest.raises(ValueError):
        kcap.run(bad, out=tmp_path / "bad", kcap_bin=REAL_KCAP)
