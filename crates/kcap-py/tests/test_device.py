"""Device selection: ``Brain(p, device=...)``, ``brain.device``,
``brain.to(device)`` and ``load(path, device=...)`` accept the CLI's names
("cpu", "cuda", "cuda:N") and report its errors: an unknown name is a
ValueError, a GPU that cannot be opened a kcap.DeviceError (a RuntimeError)
with the CLI's message. On a machine without an NVIDIA driver or GPU the CUDA
tests check that error; on one with a GPU they check that the GPU gives the
CPU's winners."""

import pickle

import pytest

import kcap

NO_GPU = "no CUDA driver/device found: "


def unknown_device(name):
    """The CLI's message for an unknown device name (Rust's quoting)."""
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (f"unknown device {quoted}: expected \"cpu\", \"cuda\" or \"cuda:N\" "
            "(N = GPU number, from 0)")


def open_cuda(**kwargs):
    """A brain on "cuda", or the DeviceError saying why there is none (after
    checking it is the missing-driver/device error and nothing else)."""
    try:
        return kcap.Brain(0.01, seed=7, device="cuda", **kwargs), None
    except kcap.DeviceError as e:
        assert str(e).startswith("device cuda:0: " + NO_GPU), str(e)
        return None, e


def test_device_error_is_a_runtime_error_of_kcap():
    assert issubclass(kcap.DeviceError, RuntimeError)
    assert issubclass(kcap.DeviceError, kcap.KcapError)
    assert kcap.DeviceError.__module__ == "kcap"
    assert kcap.DEVICES == ["cpu", "cuda"]


def test_cpu_is_the_default_device():
    b = kcap.Brain(0.1)
    assert b.device == "cpu" and b.backend == "cpu"
    assert kcap.Brain(0.1, device="cpu").device == "cpu"
    assert b.to("cpu") is b and b.device == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", " cpu", "", 'cu"da'])
def test_unknown_device_is_a_value_error_with_the_cli_message(name, tmp_path):
    with pytest.raises(kcap.InvalidParameterError) as e:
        kcap.Brain(0.1, device=name)
    assert isinstance(e.value, ValueError)
    assert str(e.value) == unknown_device(name)

    b = kcap.Brain(0.1)
    with pytest.raises(ValueError) as e:
        b.to(name)
    assert str(e.value) == unknown_device(name)
    assert b.device == "cpu"

    b.save(tmp_path / "b.kcap")
    for load in (kcap.load, kcap.Brain.load):
        with pytest.raises(ValueError) as e:
            load(tmp_path / "b.kcap", device=name)
        assert str(e.value) == unknown_device(name)


def test_device_must_be_a_string():
    with pytest.raises(TypeError):
        kcap.Brain(0.1, device=0)


def test_arguments_are_checked_before_the_device_is_opened():
    with pytest.raises(kcap.InvalidParameterError, match="invalid parameter p = 2"):
        kcap.Brain(2.0, device="cuda")
    with pytest.raises(ValueError, match="unknown tail"):
        kcap.Brain(0.1, device="cuda", tail="uniform")


def test_cuda_opens_or_raises_device_error_with_the_cli_message():
    b, err = open_cuda()
    if err is not None:
        # No driver or GPU here: the CLI's message, as a RuntimeError.
        assert isinstance(err, RuntimeError)
        assert str(err).startswith("device cuda:0: no CUDA driver/device found: ")
        # Positional `device` (the fifth parameter) too.
        with pytest.raises(kcap.DeviceError, match="^device cuda:0: " + NO_GPU):
            kcap.Brain(0.1, True, False, 0, "cuda")
        with pytest.raises(kcap.DeviceError, match="^device cuda:0: " + NO_GPU):
            kcap.Brain(0.1, device="cuda:0")
    else:
        assert b.device == "cuda:0" and b.backend == "cuda:0"
        assert kcap.Brain(0.1, device="cuda:0").device == "cuda:0"


def test_a_gpu_that_does_not_exist_is_a_device_error():
    # No machine has 1000 GPUs: the error is the same with or without a driver.
    with pytest.raises(kcap.DeviceError, match="^device cuda:999: " + NO_GPU):
        kcap.Brain(0.1, device="cuda:999")


def test_failed_move_leaves_the_brain_where_it_was(trained):
    before = trained.winners("A")
    with pytest.raises(kcap.DeviceError, match="^device cuda:999: " + NO_GPU):
        trained.to("cuda:999")
    assert trained.device == "cpu"
    trained.project({"s": ["A"]}, {"A": ["A"]})
    assert len(trained.winners("A")) == len(before)


def test_loaded_and_unpickled_brains_run_on_the_cpu(trained, tmp_path):
    path = tmp_path / "t.kcap"
    trained.save(path)
    assert kcap.load(path).device == "cpu"
    assert kcap.Brain.load(path, device="cpu").device == "cpu"
    assert pickle.loads(pickle.dumps(trained)).device == "cpu"
    b, err = open_cuda()
    if err is not None:
        with pytest.raises(kcap.DeviceError, match="^device cuda:0: " + NO_GPU):
            kcap.load(path, device="cuda")
    else:
        loaded = kcap.load(path, device="cuda")
        assert loaded.device == "cuda:0"
        # A pickle does not carry the device.
        assert pickle.loads(pickle.dumps(loaded)).device == "cpu"


def procedural_run(device, move_at=None):
    """Two procedural areas (n = 200 000, k = 100), P recurrent and P <-> Q,
    for 8 steps; every step's winners of both. `move_at`: step after which
    the brain moves onto `device` (else it starts there)."""
    b = kcap.Brain(0.01, seed=7, device="cpu" if move_at is not None else device)
    b.add_stimulus("s", 100)
    b.add_area("P", 200_000, 100, 0.05, engine="procedural")
    b.add_area("Q", 200_000, 100, 0.05, engine="procedural")
    b.record_winners("P")
    b.record_winners("Q")
    schedule = [({"s": ["P"]}, {}), ({"s": ["P"]}, {"P": ["P", "Q"]})]
    schedule += [({"s": ["P"]}, {"P": ["P", "Q"], "Q": ["P", "Q"]})] * 6
    for i, (stims, areas) in enumerate(schedule):
        if i == move_at:
            assert b.to(device) is b
        b.project(stims, areas)
    assert b.device == ("cuda:0" if device == "cuda" else device)
    return [w.tolist() for w in b.winner_history("P")], [w.tolist() for w in b.winner_history("Q")]


def test_procedural_winners_are_the_same_on_cuda_and_cpu():
    _, err = open_cuda()
    if err is not None:
        pytest.skip(f"no GPU here ({err})")
    cpu = procedural_run("cpu")
    assert len(cpu[0]) == 8 and len(cpu[1]) == 7
    assert all(len(w) == 100 for w in cpu[0] + cpu[1])
    assert procedural_run("cuda") == cpu
    assert procedural_run("cuda", move_at=3) == cpu
