"""A script written for the reference `brain.py` runs unchanged with
`import kcap as brain` (examples/reference_style.py), and its simulations
show the expected behaviour."""

import ast
import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "reference_style.py"

# The drop-in surface: what scripts for the reference implementation use.
DROP_IN = {
    "Brain", "add_stimulus", "add_area", "add_explicit_area", "project", "update_plasticity",
    "update_plasticities", "disable_plasticity", "activate", "area_by_name", "areas", "save_size",
    "save_winners", "p", "stimulus_size_by_name", "n", "k", "beta", "w", "winners", "saved_w",
    "saved_winners", "num_first_winners", "fix_assembly", "unfix_assembly", "fixed_assembly",
}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reference_style", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_uses_only_the_drop_in_api():
    tree = ast.parse(SCRIPT.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert any(a.name == "kcap" and a.asname == "brain" for n in imports for a in getattr(n, "names", []))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("brain", "b"):
            used.add(node.attr)
    assert used <= DROP_IN, f"not in the reference API: {used - DROP_IN}"


def test_the_script_runs_unchanged_as_a_program():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "pattern completion" in out.stdout and "merge" in out.stdout


def test_project_sim_converges(script):
    w = script.project_sim(t=40)
    assert len(w) == 40 and w[-1] == w[-10]


def test_larger_beta_gives_smaller_support(script):
    r = script.project_beta_sim(t=20, betas=(0.2, 0.05))
    assert r[0.2] < r[0.05]


def test_pattern_com_recovers_the_assembly(script):
    random.seed(1)
    recovered, saved = script.pattern_com()
    assert recovered >= 0.9
    assert len(saved) == 30


def test_assoc_sim_brings_assemblies_closer(script):
    before, after = script.assoc_sim()
    assert after > before


def test_merge_sim_grows_all_three(script):
    a, b, c = script.merge_sim(max_t=15)
    assert len(a) == len(b) == 16 and len(c) == 15  # C is a target from the second step on
    assert min(a[-1], b[-1], c[-1]) > 317


def test_fixed_readout(script):
    fixed_ok, kept, first = script.fixed_readout_sim()
    assert fixed_ok
    assert 0 <= kept <= 317 and first >= 0
