"""Shared fixtures of the kcap Python test suite."""

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
