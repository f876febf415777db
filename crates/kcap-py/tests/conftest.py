"""Shared fixtures of the kcap Python test suite."""

import os
import shutil

import pytest

import kcap

# Small but not degenerate: k = 100 of n = 10 000, p = 0.05 (5 expected
# synapses from each firing neuron set of 100 into each neuron).
N, K, P, BETA = 10_000, 100, 0.05, 0.05


@pytest.fixture
def brain():
    """A brain with stimulus "s" (size K) and empty areas "A" and "B"."""
    b = kcap.Brain(P, seed=1)
    b.add_stimulus("s", K)
    b.add_area("A", N, K, BETA)
    b.add_area("B", N, K, BETA)
    return b


@pytest.fixture
def trained(brain):
    """`brain` after 10 steps of s → A with A → A (A holds an assembly)."""
    brain.project({"s": ["A"]}, {})
    for _ in range(9):
        brain.project({"s": ["A"]}, {"A": ["A"]})
    return brain


# The kcap command-line tool, if built (scripts/test-python.sh sets KCAP_BIN).
REAL_KCAP = os.environ.get("KCAP_BIN") or shutil.which("kcap")
needs_cli = pytest.mark.skipif(not REAL_KCAP, reason="the kcap command-line tool is not built (set KCAP_BIN)")


def tiny_experiment(path, seed=1, repeat=4):
    """Writes an experiment file: stimulus "stim" (50) into area "A"
    (n = 10 000, k = 50, p = beta = 0.05), one step, then `repeat` steps
    with A recurrent. Returns `path`."""
    path.write_text(f"""\
name = "tiny"
[brain]
p = 0.05
seed = {seed}
[[stimulus]]
name = "stim"
size = 50
[[area]]
name = "A"
n = 10_000
k = 50
beta = 0.05
[[step]]
fire = {{ stim = ["A"] }}
[[step]]
repeat = {repeat}
fire = {{ stim = ["A"], A = ["A"] }}
""")
    return path
