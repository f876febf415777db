//! The k-cap: choose the k largest inputs.
//!
//! **Tie-break key: lowest index wins.** Among equal inputs, the neuron with
//! the smaller id is preferred. In the lazy engine the k fresh candidates are
//! indexed after the w known neurons, in draw order, so on a tie a neuron that
//! already fired beats a newcomer (as in the reference implementation, whose
//! `heapq.nlargest` keeps earlier items first). The key depends on nothing but
//! the values and their positions, so every backend and thread count agrees.

use std::cmp::Ordering;

/// Order on (value, index): larger value first, then lower index.
#[inline(always)]
pub fn better(va: f32, ia: u32, vb: f32, ib: u32) -> Ordering {
    vb.total_cmp(&va).then(ia.cmp(&ib))
}

/// Maps an f32 to a u32 whose unsigned order is the float's total order.
#[inline(always)]
pub fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Indices of the `k` largest `values` (ties: lowest index), sorted by index.
/// `k` larger than `values.len()` returns every index.
///
/// Works on packed u64 keys `(!order_key(v) << 32) | index`, whose ascending
/// order is exactly "larger value first, then lower index", so the selection
/// compares plain integers.
pub fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    assert!(
        values.len() <= u32::MAX as usize,
        "top_k over more than 2^32 values"
    );
    if k >= values.len() {
        return (0..values.len() as u32).collect();
    }
    if k == 0 {
        return Vec::new();
    }
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((!order_key(v) as u64) << 32) | i as u64)
        .collect();
    keys.select_nth_unstable(k - 1);
    let mut idx: Vec<u32> = keys[..k].iter().map(|&key| key as u32).collect();
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(values: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..values.len() as u32).collect();
        idx.sort_by(|&a, &b| better(values[a as usize], a, values[b as usize], b));
        idx.truncate(k);
        idx.sort_unstable();
        idx
    }

    #[test]
    fn ties_go_to_lowest_index() {
        assert_eq!(top_k(&[1.0, 2.0, 2.0, 2.0, 0.5], 2), vec![1, 2]);
        assert_eq!(top_k(&[3.0, 3.0, 3.0], 1), vec![0]);
        assert_eq!(top_k(&[1.0, 5.0], 5), vec![0, 1]);
    }

    #[test]
    fn matches_full_sort_on_random_inputs() {
        let mut s = crate::rng::Stream::new(11);
        for trial in 0..200 {
            let n = 1 + s.below(300) as usize;
            let k = s.below(n as u64 + 1) as usize;
            // Few distinct values so ties are common.
            let v: Vec<f32> = (0..n).map(|_| s.below(7) as f32).collect();
            assert_eq!(top_k(&v, k), brute(&v, k), "trial {trial}");
        }
    }
}
