//! The operations of the assembly calculus (SPEC §6), built on
//! [`Brain::project`]. Each documents its schedule; all return the brain's
//! errors unchanged.

use crate::brain::{Brain, Projection};
use crate::error::Result;

/// Number of neurons two winner sets share (both sorted or not; u32 or u64 ids).
pub fn overlap<T: Copy + Eq + std::hash::Hash>(a: &[T], b: &[T]) -> usize {
    let set: std::collections::HashSet<T> = a.iter().copied().collect();
    b.iter().filter(|x| set.contains(x)).count()
}

/// Which of `assemblies` the winner set matches best: `(index, overlap)` of
/// the largest overlap (ties: lowest index); `None` for an empty list.
pub fn best_match<T: Copy + Eq + std::hash::Hash>(
    winners: &[T],
    assemblies: &[Vec<T>],
) -> Option<(usize, usize)> {
    assemblies
        .iter()
        .enumerate()
        .map(|(i, a)| (i, overlap(winners, a)))
        .fold(None, |best, (i, o)| match best {
            Some((_, bo)) if bo >= o => best,
            _ => Some((i, o)),
        })
}

/// Projection of a stimulus into an area with recurrence: one step
/// `stim → area`, then `rounds − 1` steps `stim → area, area → area`
/// (`rounds` ≥ 1 steps in total). Returns the final winners.
///
/// This and the other operations that return winners read them as u32
/// ids, which a procedural area of n > 2³² refuses (checked before the first
/// step); their `run_*` twins run the same schedule for any area and leave
/// reading the winners to the caller ([`Brain::winners_u64`]).
pub fn project_rounds(b: &mut Brain, stim: &str, area: &str, rounds: usize) -> Result<Vec<u32>> {
    b.winners(area)?;
    run_project_rounds(b, stim, area, rounds)?;
    Ok(b.winners(area)?.to_vec())
}

/// The schedule of [`project_rounds`], for areas of any size.
pub fn run_project_rounds(b: &mut Brain, stim: &str, area: &str, rounds: usize) -> Result<()> {
    b.project(&Projection::new().fire(stim, [area]))?;
    let rec = Projection::new().fire(stim, [area]).fire(area, [area]);
    for _ in 1..rounds {
        b.project(&rec)?;
    }
    Ok(())
}

/// Reciprocal projection: `a` already holds an assembly (e.g. from
/// [`project_rounds`]); for `rounds` steps `stim → a`, `a → {a, b}`,
/// `b → {a, b}` — the first step without `b → …`, since `b` has no winners
/// yet. Returns the winners of `b`.
pub fn reciprocal_project(
    b: &mut Brain,
    stim: &str,
    a: &str,
    target: &str,
    rounds: usize,
) -> Result<Vec<u32>> {
    b.winners(target)?;
    run_reciprocal_project(b, stim, a, target, rounds)?;
    Ok(b.winners(target)?.to_vec())
}

/// The schedule of [`reciprocal_project`], for areas of any size.
pub fn run_reciprocal_project(
    b: &mut Brain,
    stim: &str,
    a: &str,
    target: &str,
    rounds: usize,
) -> Result<()> {
    b.project(&Projection::new().fire(stim, [a]).fire(a, [a, target]))?;
    let full = Projection::new()
        .fire(stim, [a])
        .fire(a, [a, target])
        .fire(target, [a, target]);
    for _ in 1..rounds {
        b.project(&full)?;
    }
    Ok(())
}

/// Association (PNAS 2020): two stimuli have projected through `a` and `b`
/// into `c` separately; then for `rounds` steps both fire together:
/// `stim_a → a`, `stim_b → b`, `a → {a, c}`, `b → {b, c}`, `c → c`.
/// Afterwards the two assemblies in `c` overlap more than before.
pub fn associate(
    b: &mut Brain,
    (stim_a, area_a): (&str, &str),
    (stim_b, area_b): (&str, &str),
    c: &str,
    rounds: usize,
) -> Result<()> {
    let p = Projection::new()
        .fire(stim_a, [area_a])
        .fire(stim_b, [area_b])
        .fire(area_a, [area_a, c])
        .fire(area_b, [area_b, c])
        .fire(c, [c]);
    for _ in 0..rounds {
        b.project(&p)?;
    }
    Ok(())
}

/// Merge (the reference `merge` simulation): `stim_a → a`, `stim_b → b` for
/// one step; then one step adding `a → {a, c}` and `b → {b, c}`; then
/// `rounds` steps adding `c → {c, a, b}`. `2 + rounds` steps in total
/// (`merge-1e5` uses rounds = 49: 51 steps). Returns c's winners.
pub fn merge(
    b: &mut Brain,
    first: (&str, &str),
    second: (&str, &str),
    c: &str,
    rounds: usize,
) -> Result<Vec<u32>> {
    b.winners(c)?;
    run_merge(b, first, second, c, rounds)?;
    Ok(b.winners(c)?.to_vec())
}

/// The schedule of [`merge`], for areas of any size.
pub fn run_merge(
    b: &mut Brain,
    (stim_a, a): (&str, &str),
    (stim_b, bb): (&str, &str),
    c: &str,
    rounds: usize,
) -> Result<()> {
    let stims = Projection::new().fire(stim_a, [a]).fire(stim_b, [bb]);
    b.project(&stims)?;
    let up = stims.clone().fire(a, [a, c]).fire(bb, [bb, c]);
    b.project(&up)?;
    let full = up.fire(c, [c, a, bb]);
    for _ in 0..rounds {
        b.project(&full)?;
    }
    Ok(())
}

/// Pattern completion: keeps a random `fraction` of the area's current
/// winners (the assembly), fires them into the area itself for `rounds`
/// steps (`area → area` only), and returns how many of the original
/// assembly are among the final winners.
pub fn pattern_completion(
    b: &mut Brain,
    area: &str,
    fraction: f64,
    rounds: usize,
) -> Result<usize> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(crate::error::invalid(
            "fraction",
            fraction,
            "must lie in (0, 1]",
        ));
    }
    let assembly = b.winners_u64(area)?;
    let keep = ((assembly.len() as f64 * fraction).round() as usize).max(1);
    b.subsample_winners(area, keep)?;
    let p = Projection::new().fire(area, [area]);
    for _ in 0..rounds {
        b.project(&p)?;
    }
    Ok(overlap(&assembly, &b.winners_u64(area)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_best_match() {
        assert_eq!(overlap(&[1, 2, 3], &[3, 4, 1]), 2);
        assert_eq!(
            best_match(&[1, 2, 3], &[vec![9], vec![1, 2], vec![2, 3]]),
            Some((1, 2))
        );
        assert_eq!(best_match(&[1], &[]), None);
    }
}
