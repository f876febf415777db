"""Assembly-calculus simulations written the way scripts for the reference
``brain.py`` are written: plain functions that build a ``brain.Brain``, drive
it with ``project`` dicts and read ``area_by_name[...]`` attributes.

Only the reference (drop-in) API is used, so the file runs unchanged against
kcap with the single import line below (for the reference implementation it
would read ``import brain``). Run it directly to print a short report:

    python crates/kcap-py/examples/reference_style.py
"""

import random
import sys

import kcap as brain


def overlap(a, b):
    """Number of neurons two winner lists share."""
    return len(set(a) & set(b))


def project_sim(n=100000, k=317, p=0.01, beta=0.05, t=50):
    """Stimulus into A with recurrence; returns the support after each step."""
    b = brain.Brain(p)
    b.add_stimulus("stim", k)
    b.add_area("A", n, k, beta)
    b.project({"stim": ["A"]}, {})
    for _ in range(t - 1):
        b.project({"stim": ["A"]}, {"A": ["A"]})
    return b.area_by_name["A"].saved_w


def project_beta_sim(n=100000, k=317, p=0.01, t=30, betas=(0.25, 0.1, 0.05)):
    """Final support of the projected assembly for several plasticities."""
    results = {}
    for beta in betas:
        print("Working on beta = " + str(beta))
        results[beta] = project_sim(n, k, p, beta, t)[-1]
    return results


def pattern_com(n=100000, k=317, p=0.05, beta=0.05, project_iter=25, alpha=0.5, comp_iter=5):
    """Trains an assembly, fires a random fraction of it, and returns the
    fraction of the assembly recovered."""
    b = brain.Brain(p, save_winners=True)
    b.add_stimulus("stim", k)
    b.add_area("A", n, k, beta)
    b.project({"stim": ["A"]}, {})
    for _ in range(project_iter - 1):
        b.project({"stim": ["A"]}, {"A": ["A"]})
    assembly = list(b.area_by_name["A"].winners)
    # pick a random subset of the assembly to fire
    subsample_size = int(k * alpha)
    subsample = random.sample(b.area_by_name["A"].winners, subsample_size)
    b.area_by_name["A"].winners = subsample
    for _ in range(comp_iter):
        b.project({}, {"A": ["A"]})
    return overlap(assembly, b.area_by_name["A"].winners) / float(k), b.area_by_name["A"].saved_winners


def assoc_sim(n=100000, k=317, p=0.05, beta=0.1, overlap_iter=10):
    """Association: two assemblies in C become closer after firing together."""
    b = brain.Brain(p, save_winners=True)
    b.add_stimulus("stimA", k)
    b.add_area("A", n, k, beta)
    b.add_stimulus("stimB", k)
    b.add_area("B", n, k, beta)
    b.add_area("C", n, k, beta)
    b.project({"stimA": ["A"], "stimB": ["B"]}, {})
    for _ in range(9):
        b.project({"stimA": ["A"], "stimB": ["B"]}, {"A": ["A"], "B": ["B"]})
    b.project({"stimA": ["A"]}, {"A": ["A", "C"]})
    for _ in range(9):
        b.project({"stimA": ["A"]}, {"A": ["A", "C"], "C": ["C"]})
    c_from_a = list(b.area_by_name["C"].winners)
    b.project({"stimB": ["B"]}, {"B": ["B", "C"]})
    for _ in range(9):
        b.project({"stimB": ["B"]}, {"B": ["B", "C"], "C": ["C"]})
    c_from_b = list(b.area_by_name["C"].winners)
    before = overlap(c_from_a, c_from_b)
    for _ in range(overlap_iter):
        b.project({"stimA": ["A"], "stimB": ["B"]}, {"A": ["A", "C"], "B": ["B", "C"], "C": ["C"]})
    b.project({"stimA": ["A"]}, {"A": ["A", "C"]})
    for _ in range(4):
        b.project({"stimA": ["A"]}, {"A": ["A", "C"], "C": ["C"]})
    c_from_a_after = list(b.area_by_name["C"].winners)
    b.project({"stimB": ["B"]}, {"B": ["B", "C"]})
    for _ in range(4):
        b.project({"stimB": ["B"]}, {"B": ["B", "C"], "C": ["C"]})
    c_from_b_after = list(b.area_by_name["C"].winners)
    return before, overlap(c_from_a_after, c_from_b_after)


def merge_sim(n=100000, k=317, p=0.01, beta=0.05, max_t=50):
    """Merge: A and B project together into C, which projects back."""
    b = brain.Brain(p)
    b.add_stimulus("stimA", k)
    b.add_stimulus("stimB", k)
    b.add_area("A", n, k, beta)
    b.add_area("B", n, k, beta)
    b.add_area("C", n, k, beta)
    b.project({"stimA": ["A"], "stimB": ["B"]}, {})
    b.project({"stimA": ["A"], "stimB": ["B"]}, {"A": set(["A", "C"]), "B": set(["B", "C"])})
    for _ in range(max_t - 1):
        b.project({"stimA": ["A"], "stimB": ["B"]}, {"A": ["A", "C"], "B": ["B", "C"], "C": ["C", "A", "B"]})
    return b.areas["A"].saved_w, b.areas["B"].saved_w, b.areas["C"].saved_w


def fixed_readout_sim(n=100000, k=317, p=0.01, beta=0.05):
    """A fixed assembly in A drives B while plasticity is switched off, then
    on for the A→B fiber only."""
    b = brain.Brain(p, save_winners=True)
    b.add_stimulus("stim", k)
    b.add_area("A", n, k, beta)
    b.add_area("B", n, k, beta)
    b.project({"stim": ["A"]}, {})
    for _ in range(9):
        b.project({"stim": ["A"]}, {"A": ["A"]})
    b.area_by_name["A"].fix_assembly()
    b.disable_plasticity = True
    b.project({}, {"A": ["A", "B"]})
    first_b = list(b.area_by_name["B"].winners)
    b.disable_plasticity = False
    b.update_plasticities(area_update_map={"B": [("A", 0.2), ("B", 0.0)]})
    for _ in range(9):
        b.project({}, {"A": ["A", "B"], "B": ["B"]})
    b.area_by_name["A"].unfix_assembly()
    fixed_ok = all(w == b.area_by_name["A"].saved_winners[-1] for w in b.area_by_name["A"].saved_winners[-10:])
    return fixed_ok, overlap(first_b, b.area_by_name["B"].winners), b.area_by_name["B"].num_first_winners


def main():
    random.seed(0)
    supports = project_sim(t=30)
    print("project: final support %d, last growth %d" % (supports[-1], supports[-1] - supports[-6]))
    print("project, beta sweep:", project_beta_sim(t=20))
    recovered, saved = pattern_com()
    print("pattern completion: %.3f of the assembly recovered (%d steps saved)" % (recovered, len(saved)))
    before, after = assoc_sim()
    print("association: overlap in C %d before, %d after" % (before, after))
    a_w, b_w, c_w = merge_sim(max_t=20)
    print("merge: supports A %d, B %d, C %d" % (a_w[-1], b_w[-1], c_w[-1]))
    fixed_ok, kept, first = fixed_readout_sim()
    print("fixed readout: A stayed fixed %s, B kept %d of its first winners, %d new" % (fixed_ok, kept, first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
