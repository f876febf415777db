"""Checkpoints from Python: Brain.save / Brain.load / kcap.load and pickling.

A restored brain must continue *exactly* as the uninterrupted one (same
winners at every step, same saved_w / saved_winners), whatever the route:
file, pickle (every protocol), copy.deepcopy. Bad files are clear Python
exceptions: OSError subclasses for the file system, kcap.CheckpointError
for what is inside the file."""

import copy
import json
import os
import pickle
import struct
import subprocess
import zlib

import numpy as np
import pytest

import kcap
from conftest import K, REAL_KCAP, needs_cli, tiny_experiment

# Continues the `trained` fixture: A recurrent, A -> B, s -> B.
SCHEDULE = [({"s": ["A"]}, {"A": ["A", "B"]}), ({"s": ["B"]}, {"A": ["B"], "B": ["B"]})]


def _run_both(a, b, steps=8):
    """Steps both brains with the same schedule; winners must agree at every step."""
    for i in range(steps):
        stim, areas = SCHEDULE[i % 2]
        a.project(stim, areas)
        b.project(stim, areas)
        for name in ("A", "B"):
            assert np.array_equal(a.winners(name), b.winners(name)), (i, name)


def _same_record(a, b):
    assert a.steps == b.steps and a.seed == b.seed and a.p == b.p
    for name in ("A", "B"):
        x, y = a.area_by_name[name], b.area_by_name[name]
        assert x.saved_w == y.saved_w
        assert x.saved_winners == y.saved_winners
        assert x.winners == y.winners and x.w == y.w
        for key, v in a.history(name).items():
            assert np.array_equal(v, b.history(name)[key]), (name, key)


def test_save_and_load_resume_exactly(trained, tmp_path):
    path = tmp_path / "b.kcap"
    trained.save(path)
    for loaded in (kcap.Brain.load(path), kcap.load(str(path))):
        assert type(loaded) is kcap.Brain
        _same_record(trained, loaded)
    loaded = kcap.load(path)
    _run_both(trained, loaded)
    _same_record(trained, loaded)
    # Saving replaces the file atomically and leaves no temporary file.
    trained.save(path)
    assert os.listdir(tmp_path) == ["b.kcap"]
    assert kcap.load(path).steps == trained.steps


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_resumes_exactly(trained, protocol):
    clone = pickle.loads(pickle.dumps(trained, protocol=protocol))
    _same_record(trained, clone)
    _run_both(trained, clone)
    _same_record(trained, clone)


def test_copies_are_independent(trained):
    deep, shallow = copy.deepcopy(trained), copy.copy(trained)
    before = trained.winners("A").copy()
    for c in (deep, shallow):
        c.project({"s": ["A"]}, {"A": ["A"]})
    assert trained.steps == 10 and deep.steps == shallow.steps == 11
    assert np.array_equal(trained.winners("A"), before)
    assert np.array_equal(deep.winners("A"), shallow.winners("A"))


def test_bookkeeping_flags_and_plasticity_survive(tmp_path):
    b = kcap.Brain(0.05, save_winners=True, seed=4)
    b.add_stimulus("s", K)
    b.add_area("A", 10_000, K, 0.05)
    b.add_area("B", 10_000, K, 0.05)
    b.project({"s": ["A"]}, {})
    b.save_size = False  # these steps are left out of saved_w
    b.project({"s": ["A"]}, {"A": ["A"]})
    b.project({"s": ["A"]}, {"A": ["A"]})
    b.save_size = True
    b.project({"s": ["A"]}, {"A": ["A"]})
    b.disable_plasticity = True
    b.update_plasticity("A", "B", 0.3)
    b.w_max = 2.0
    b.extra = {"note": [1, 2]}  # instance attributes pickle too
    assert len(b.area_by_name["A"].saved_w) == 2
    b.save(tmp_path / "b.kcap")
    for r in (pickle.loads(pickle.dumps(b)), kcap.load(tmp_path / "b.kcap")):
        assert r.save_size is True and r.save_winners is True and r.disable_plasticity is True
        assert r.w_max == 2.0
        assert r.area_by_name["B"].beta_by_area["A"] == 0.3
        assert r.area_by_name["A"].saved_w == b.area_by_name["A"].saved_w
        r.add_area("C", 1000, 10, 0.1)  # save_winners still applies to new areas
        r.project({"s": ["C"]}, {})
        assert len(r.area_by_name["C"].saved_winners) == 1
    assert pickle.loads(pickle.dumps(b)).extra == {"note": [1, 2]}
    assert not hasattr(kcap.load(tmp_path / "b.kcap"), "extra")  # files hold the simulation only


class ParserBrain(kcap.Brain):
    def __init__(self, p, lexicon):
        kcap.Brain.__init__(self, p, seed=9)
        self.lexicon = lexicon
        self.add_stimulus("s", K)
        self.add_area("A", 10_000, K, 0.05)


def test_subclasses_pickle_and_load_as_their_class(tmp_path):
    b = ParserBrain(0.05, ["the", "dog"])
    b.project({"s": ["A"]}, {})
    c = pickle.loads(pickle.dumps(b))
    assert type(c) is ParserBrain and c.lexicon == ["the", "dog"]
    assert c.winners("A").tolist() == b.winners("A").tolist()
    b.save(tmp_path / "p.kcap")
    d = ParserBrain.load(tmp_path / "p.kcap")
    assert type(d) is ParserBrain and not hasattr(d, "lexicon")
    assert d.winners("A").tolist() == b.winners("A").tolist()


def test_explicit_areas_with_per_fiber_formats_resume_exactly(tmp_path):
    if "explicit" not in kcap.AVAILABLE_ENGINES:
        pytest.skip("the explicit engine is not in this build")
    b = kcap.Brain(0.05, seed=2)
    b.add_stimulus("s", 50)
    b.add_area("E", 3000, 50, 0.05, engine="explicit")
    b.add_area("F", 3000, 50, 0.05, engine="explicit")
    b.add_area("L", 100_000, 50, 0.05)
    b.set_fiber_format("E", "F", weights="bf16", rounding="stochastic", indices="u16")
    b.project({"s": ["E"]}, {})
    b.project({"s": ["E"]}, {"E": ["E", "F", "L"]})
    b.save(tmp_path / "e.kcap")
    restored = [kcap.load(tmp_path / "e.kcap"), pickle.loads(pickle.dumps(b))]
    for r in restored:
        assert r.memory_report() == b.memory_report()
    for _ in range(4):
        for x in [b, *restored]:
            x.project({"s": ["E"]}, {"E": ["E", "F", "L"], "F": ["F"]})
        for r in restored:
            for name in ("E", "F", "L"):
                assert np.array_equal(b.winners(name), r.winners(name)), name


# ----- bad files and states ------------------------------------------------


def test_missing_files_and_folders_are_os_errors(tmp_path, brain):
    missing = tmp_path / "nope.kcap"
    with pytest.raises(FileNotFoundError) as e:
        kcap.load(missing)
    assert e.value.filename == str(missing) and "No such file" in str(e.value)
    with pytest.raises(FileNotFoundError):
        kcap.Brain.load(str(missing))
    with pytest.raises(FileNotFoundError):
        brain.save(tmp_path / "no-folder" / "b.kcap")
    with pytest.raises(IsADirectoryError):
        kcap.load(tmp_path)
    assert os.listdir(tmp_path) == []


def _frame(data):
    """(version, header dict, payload) of checkpoint bytes (layout: docs/python.md)."""
    version, hlen = struct.unpack_from("<II", data, 8)
    header = json.loads(data[16:16 + hlen])
    (plen,) = struct.unpack_from("<Q", data, 16 + hlen)
    return version, header, data[24 + hlen:24 + hlen + plen]


def _build(version, header, payload):
    h = json.dumps(header, separators=(",", ":")).encode()
    body = struct.pack("<II", version, len(h)) + h + struct.pack("<Q", len(payload)) + payload
    return b"KCAPCKPT" + body + struct.pack("<I", zlib.crc32(body))


def test_corrupt_truncated_and_foreign_files_are_checkpoint_errors(trained, tmp_path):
    good = tmp_path / "good.kcap"
    trained.save(good)
    data = good.read_bytes()
    assert _build(*_frame(data)) == data  # the test's reading of the layout is right
    version, header, payload = _frame(data)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = {
        "truncated": data[: len(data) // 2],
        "checksum mismatch": bytes(flipped),
        "not a kcap checkpoint": b"PK\x03\x04 a zip file, say",
        "newer kcap": _build(version + 1, header, payload),
        "malformed payload": _build(version, header, payload[: len(payload) // 3]),
        "malformed notes": _build(version, {**header, "notes": {"python": {"save_size": "yes"}}}, payload),
    }
    for i, (message, content) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.kcap"
        path.write_bytes(content)
        with pytest.raises(kcap.CheckpointError, match=message) as e:
            kcap.load(path)
        assert isinstance(e.value, ValueError) and isinstance(e.value, kcap.KcapError)
        assert str(path) in str(e.value)
    # Hostile bookkeeping cannot ask for an absurd allocation.
    hostile = {**header, "notes": {"python": {"save_size": True, "save_winners": False, "unsized_steps": [[1, 2**63]]}}}
    (tmp_path / "h.kcap").write_bytes(_build(version, hostile, payload))
    with pytest.raises(kcap.CheckpointError, match="unsized_steps"):
        kcap.load(tmp_path / "h.kcap")
    # Without the binding's notes (as the CLI writes them) the defaults apply.
    plain = {k: v for k, v in header.items() if k != "notes"}
    (tmp_path / "plain.kcap").write_bytes(_build(version, plain, payload))
    r = kcap.load(tmp_path / "plain.kcap")
    assert r.save_size is True and r.save_winners is False
    assert np.array_equal(r.winners("A"), trained.winners("A"))


def test_bad_pickle_states(trained):
    bytes_, attrs = trained.__getstate__()
    blank = kcap.Brain.__new__(kcap.Brain)
    with pytest.raises(kcap.CheckpointError, match="<pickled Brain>.*checksum mismatch"):
        blank.__setstate__((bytes_[:-1] + bytes([bytes_[-1] ^ 1]), attrs))
    with pytest.raises(TypeError, match="checkpoint bytes, dict"):
        blank.__setstate__("nonsense")
    with pytest.raises(RuntimeError, match="not initialised"):
        pickle.dumps(blank)
    blank.__setstate__((bytes_, attrs))
    assert np.array_equal(blank.winners("A"), trained.winners("A"))


@needs_cli
def test_cli_checkpoints_load_and_match_the_same_run_in_python(tmp_path):
    exp = tiny_experiment(tmp_path / "tiny.toml", seed=3, repeat=5)
    out = tmp_path / "out"
    subprocess.run([REAL_KCAP, "run", str(exp), "--out", str(out), "--quiet", "--checkpoint-every", "3"], check=True)
    cli = kcap.load(out / "checkpoint.kcap")
    py = kcap.Brain(0.05, seed=3)
    py.add_stimulus("stim", 50)
    py.add_area("A", 10_000, 50, 0.05)
    py.project({"stim": ["A"]}, {})
    while py.steps < cli.steps:
        py.project({"stim": ["A"]}, {"A": ["A"]})
    assert cli.steps in (3, 6)
    assert np.array_equal(cli.winners("A"), py.winners("A"))
    assert cli.area_by_name["A"].saved_w == py.area_by_name["A"].saved_w
