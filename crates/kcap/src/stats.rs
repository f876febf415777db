//! The statistical pieces of the lazy engine: the distribution of a
//! never-fired neuron's input, its quantile α, samplers for the upper tail
//! above α (truncated normal, as in the reference implementations, or exact),
//! sampling without replacement, and Bernoulli position generation.
//!
//! All probabilities are computed in f64 from log-space pmf values; the
//! quantile uses the *upper tail* `k / (n - w)` directly rather than
//! `1 - q`, so it stays exact at n = 10¹² where `q` rounds to 1.

use crate::rng::Stream;
use rand_distr::{Binomial, Distribution};

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error < 1e-14).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln of the Binomial(t, p) pmf at x.
pub fn ln_binom_pmf(t: u64, p: f64, x: u64) -> f64 {
    if x > t {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return if x == t { 0.0 } else { f64::NEG_INFINITY };
    }
    let (tf, xf) = (t as f64, x as f64);
    ln_gamma(tf + 1.0) - ln_gamma(xf + 1.0) - ln_gamma(tf - xf + 1.0)
        + xf * p.ln()
        + (tf - xf) * (-p).ln_1p()
}

/// A discrete distribution on the integers `lo..=hi` (mass outside the window
/// is below 1e-300 and dropped), with moments.
#[derive(Clone, Debug)]
pub struct Pmf {
    pub lo: u64,
    pub pmf: Vec<f64>,
    pub mean: f64,
    pub var: f64,
}

impl Pmf {
    /// Binomial(t, p), computed outward from the mode by the pmf ratio recurrence.
    pub fn binomial(t: u64, p: f64) -> Pmf {
        let mean = t as f64 * p;
        let var = t as f64 * p * (1.0 - p);
        if t == 0 || p <= 0.0 {
            return Pmf {
                lo: 0,
                pmf: vec![1.0],
                mean: 0.0,
                var: 0.0,
            };
        }
        if p >= 1.0 {
            return Pmf {
                lo: t,
                pmf: vec![1.0],
                mean,
                var: 0.0,
            };
        }
        let mode = (((t + 1) as f64) * p).floor().min(t as f64) as u64;
        let lm = ln_binom_pmf(t, p, mode);
        let odds = p / (1.0 - p);
        // Going up: pmf(x+1) = pmf(x) * (t-x)/(x+1) * odds.
        let mut up = Vec::new();
        let mut v = lm;
        let mut x = mode;
        while x < t {
            v += ((t - x) as f64 / (x + 1) as f64 * odds).ln();
            x += 1;
            if v < -700.0 {
                break;
            }
            up.push(v);
        }
        let mut down = Vec::new();
        let mut v = lm;
        let mut x = mode;
        while x > 0 {
            v += (x as f64 / ((t - x + 1) as f64 * odds)).ln();
            x -= 1;
            if v < -700.0 {
                break;
            }
            down.push(v);
        }
        let lo = mode - down.len() as u64;
        let mut pmf: Vec<f64> = down.iter().rev().map(|l| l.exp()).collect();
        pmf.push(lm.exp());
        pmf.extend(up.iter().map(|l| l.exp()));
        let s: f64 = pmf.iter().sum();
        pmf.iter_mut().for_each(|q| *q /= s);
        Pmf { lo, pmf, mean, var }
    }

    /// The distribution of the sum of independent binomials `(t_i, p_i)`.
    /// Sources with the same p are merged first (exact), the rest convolved.
    pub fn sum_of_binomials(parts: &[(u64, f64)]) -> Pmf {
        let mut merged: Vec<(u64, f64)> = Vec::new();
        for &(t, p) in parts {
            match merged.iter_mut().find(|(_, q)| *q == p) {
                Some(m) => m.0 += t,
                None => merged.push((t, p)),
            }
        }
        let mut acc = Pmf {
            lo: 0,
            pmf: vec![1.0],
            mean: 0.0,
            var: 0.0,
        };
        for (t, p) in merged {
            let b = Pmf::binomial(t, p);
            acc = acc.convolve(&b);
        }
        acc
    }

    fn convolve(&self, o: &Pmf) -> Pmf {
        if self.pmf.len() == 1 && self.lo == 0 {
            return o.clone();
        }
        let mut out = vec![0.0; self.pmf.len() + o.pmf.len() - 1];
        for (i, &a) in self.pmf.iter().enumerate() {
            if a < 1e-300 {
                continue;
            }
            for (j, &b) in o.pmf.iter().enumerate() {
                out[i + j] += a * b;
            }
        }
        Pmf {
            lo: self.lo + o.lo,
            pmf: out,
            mean: self.mean + o.mean,
            var: self.var + o.var,
        }
    }

    /// Largest value with non-negligible mass.
    pub fn hi(&self) -> u64 {
        self.lo + self.pmf.len() as u64 - 1
    }

    /// The smallest x with P(X > x) ≤ `upper` (i.e. CDF(x) ≥ 1 − upper),
    /// computed from the upper tail so that tiny `upper` stays exact.
    pub fn upper_quantile(&self, upper: f64) -> u64 {
        let mut tail = 0.0; // P(X > x) for x = current index
        for idx in (0..self.pmf.len()).rev() {
            // tail currently = P(X > lo+idx)
            if tail > upper {
                return self.lo + idx as u64 + 1;
            }
            tail += self.pmf[idx];
        }
        self.lo
    }
}

/// How the k best inputs among never-fired neurons are drawn above α.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TailSampler {
    /// Normal approximation with the input's mean and variance, truncated to
    /// [α, T], rounded to the nearest integer (the reference implementations'
    /// choice; default, so published numbers are reproduced).
    #[default]
    Normal,
    /// Exact draws from the input distribution conditioned on X ≥ α.
    Exact,
}

impl std::str::FromStr for TailSampler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "exact" => Ok(Self::Exact),
            _ => Err(format!(
                "unknown tail sampler {s:?} (expected \"normal\" or \"exact\")"
            )),
        }
    }
}

/// Upper tail of the standard normal, Q(z) = P(Z > z), accurate far out.
#[inline]
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The distribution of one candidate input: integer values `lo, lo+1, …`
/// with cumulative weights, sampled by inverse CDF with one uniform draw.
#[derive(Clone, Debug)]
pub struct TailTable {
    pub lo: u64,
    pub cum: Vec<f64>,
}

impl TailTable {
    /// The law of candidate inputs above `alpha` (values ≤ `t_total`).
    ///
    /// `Normal`: X = round(μ + σZ) with Z a standard normal truncated to
    /// [(α−μ)/σ, (T−μ)/σ] — the reference's draw — tabulated exactly: value
    /// v has the normal mass of the z-interval that rounds to v. `Exact`:
    /// the input law itself conditioned on X ≥ α.
    pub fn new(dist: &Pmf, alpha: u64, t_total: u64, how: TailSampler) -> TailTable {
        let alpha = alpha.min(t_total);
        let mut lo = alpha;
        let mut cum = Vec::new();
        let mut acc = 0.0;
        match how {
            TailSampler::Normal => {
                let sd = dist.var.sqrt();
                if sd > 0.0 && alpha < t_total {
                    let z = |x: f64| (x - dist.mean) / sd;
                    let (za, zb) = (z(alpha as f64), z(t_total as f64));
                    let qb = normal_sf(zb);
                    let mut v = alpha;
                    let mut q_lo = normal_sf(za);
                    loop {
                        let hi = z(v as f64 + 0.5);
                        let q_hi = if hi >= zb || v >= t_total {
                            qb
                        } else {
                            normal_sf(hi)
                        };
                        acc += (q_lo - q_hi).max(0.0);
                        cum.push(acc);
                        q_lo = q_hi;
                        if q_hi <= qb || q_hi < acc * 1e-18 || v >= t_total {
                            break;
                        }
                        v += 1;
                    }
                }
            }
            TailSampler::Exact => {
                let start = alpha.saturating_sub(dist.lo) as usize;
                lo = alpha.max(dist.lo);
                for &q in dist
                    .pmf
                    .iter()
                    .skip(start)
                    .take((t_total + 1).saturating_sub(lo) as usize)
                {
                    acc += q;
                    cum.push(acc);
                }
            }
        }
        if cum.is_empty() || acc <= 0.0 {
            // Degenerate law (σ = 0, α = T, or no mass above α): a point mass.
            return TailTable {
                lo: alpha,
                cum: vec![1.0],
            };
        }
        TailTable { lo, cum }
    }

    /// One draw.
    #[inline]
    pub fn sample(&self, rng: &mut Stream) -> u64 {
        let u = rng.uniform() * self.cum[self.cum.len() - 1];
        self.lo + self.cum.partition_point(|&c| c < u).min(self.cum.len() - 1) as u64
    }
}

/// Draws `k` candidate inputs from the tail of `dist` at or above `alpha`,
/// each at most `t_total` (see [`TailTable::new`] for the two laws).
pub fn sample_tail(
    dist: &Pmf,
    alpha: u64,
    t_total: u64,
    k: usize,
    how: TailSampler,
    rng: &mut Stream,
) -> Vec<f32> {
    let table = TailTable::new(dist, alpha, t_total, how);
    (0..k).map(|_| table.sample(rng) as f32).collect()
}

/// A standard normal conditioned on [a, b] (a < b), exact: Robert (1995)
/// exponential proposals in the far tail, plain rejection near the centre,
/// uniform proposals for a narrow window.
pub fn truncated_normal(a: f64, b: f64, rng: &mut Stream) -> f64 {
    debug_assert!(a < b);
    if b - a < 0.5 || (a > 0.0 && b - a < 1.0 / a) {
        // Uniform proposal on [a, b], accepted with density ratio.
        let m = if a > 0.0 {
            a
        } else if b < 0.0 {
            b
        } else {
            0.0
        };
        loop {
            let z = a + (b - a) * rng.uniform();
            if rng.uniform() <= (-(z * z - m * m) / 2.0).exp() {
                return z;
            }
        }
    }
    if a < 0.4 {
        loop {
            let z = rng.normal();
            if z >= a && z <= b {
                return z;
            }
        }
    }
    let lambda = (a + (a * a + 4.0).sqrt()) / 2.0;
    loop {
        let z = a - rng.uniform().ln() / lambda;
        if z <= b && rng.uniform() <= (-(z - lambda) * (z - lambda) / 2.0).exp() {
            return z;
        }
    }
}

/// `x` distinct integers drawn uniformly from `[0, total)`, in increasing
/// order. `scratch` is a reusable bit set (grown as needed).
pub fn sample_distinct(total: u64, x: u64, rng: &mut Stream, scratch: &mut Vec<u64>) -> Vec<u64> {
    assert!(x <= total, "sample_distinct: {x} > {total}");
    if x == 0 {
        return Vec::new();
    }
    if x == total {
        return (0..total).collect();
    }
    let complement = x > total / 2;
    let draw = if complement { total - x } else { x };
    let mut picked: Vec<u64> = Vec::with_capacity(draw as usize);
    if total <= (1 << 27) {
        let words = (total as usize).div_ceil(64);
        if scratch.len() < words {
            scratch.resize(words, 0);
        }
        while (picked.len() as u64) < draw {
            let v = rng.below(total);
            let (wi, bi) = ((v >> 6) as usize, v & 63);
            if scratch[wi] >> bi & 1 == 0 {
                scratch[wi] |= 1 << bi;
                picked.push(v);
            }
        }
        if complement {
            let mut out = Vec::with_capacity(x as usize);
            for v in 0..total {
                if scratch[(v >> 6) as usize] >> (v & 63) & 1 == 0 {
                    out.push(v);
                }
            }
            for &v in &picked {
                scratch[(v >> 6) as usize] = 0;
            }
            return out;
        }
        if words < 8 * picked.len() {
            // Read the picks back in order from the bit set (clearing it).
            picked.clear();
            for (wi, word) in scratch[..words].iter_mut().enumerate() {
                let mut b = *word;
                while b != 0 {
                    picked.push(((wi as u64) << 6) | b.trailing_zeros() as u64);
                    b &= b - 1;
                }
                *word = 0;
            }
        } else {
            for &v in &picked {
                scratch[(v >> 6) as usize] = 0;
            }
            picked.sort_unstable();
        }
        picked
    } else {
        // Huge ranges: draw, sort, deduplicate, top up.
        while (picked.len() as u64) < draw {
            let need = draw - picked.len() as u64;
            picked.extend((0..need).map(|_| rng.below(total)));
            picked.sort_unstable();
            picked.dedup();
        }
        if complement {
            let mut out = Vec::with_capacity(x as usize);
            let mut it = picked.iter().peekable();
            for v in 0..total {
                if it.peek() == Some(&&v) {
                    it.next();
                } else {
                    out.push(v);
                }
            }
            return out;
        }
        picked
    }
}

/// Natural logarithm of x > 0 (finite, normal), by exponent split and the
/// atanh series: relative error < 2e-13. Written out in plain arithmetic so
/// every backend (and the CUDA kernels) computes the same bits, and ~4× faster
/// than the C library's `log`.
#[inline(always)]
pub fn ln_fast(x: f64) -> f64 {
    let bits = x.to_bits();
    let frac = bits & 0x000f_ffff_ffff_ffff;
    // Mantissa m = 1.frac > √2 exactly when frac exceeds √2's (0x3ff6a09e667f3bcd);
    // then m is halved (an exact exponent decrement) — without a branch, so
    // there is no misprediction on every other draw.
    let big = (frac > 0x0006_a09e_667f_3bcd) as u64;
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023 + big as i64;
    let m = f64::from_bits((frac | 0x3ff0_0000_0000_0000) - (big << 52));
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let poly = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0
                    + s2 * (1.0 / 9.0
                        + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0 + s2 * (1.0 / 15.0)))))));
    2.0 * s * poly + e as f64 * std::f64::consts::LN_2
}

/// `1/ln(1 − p)`, the scale of the geometric skips of [`bernoulli_positions`].
#[inline]
pub fn geometric_scale(p: f64) -> f64 {
    1.0 / (-p).ln_1p()
}

/// Calls `f(i)` for each i in `[0, len)` independently with probability `p`,
/// in increasing order, by geometric skips (cost ∝ number of hits): one
/// draw `u` per skip, skip = ⌊ln_fast(u) · geometric_scale(p)⌋, stop when
/// it reaches the positions left. (The lazy engine gets the same positions
/// from the same draws faster through a skip table.)
#[inline]
pub fn bernoulli_positions(len: u64, p: f64, rng: &mut Stream, mut f: impl FnMut(u64)) {
    if len == 0 || p <= 0.0 {
        return;
    }
    if p >= 1.0 {
        (0..len).for_each(f);
        return;
    }
    let inv_ln_q = geometric_scale(p);
    let mut i: u64 = 0;
    loop {
        // ln(u) * inv_ln_q >= 0: truncation is the floor.
        let skip = ln_fast(rng.uniform()) * inv_ln_q;
        if skip >= (len - i) as f64 {
            return;
        }
        i += skip as u64;
        f(i);
        i += 1;
        if i >= len {
            return;
        }
    }
}

/// One Binomial(n, p) draw (exact, BTPE via `rand_distr`).
pub fn binomial(n: u64, p: f64, rng: &mut Stream) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    Binomial::new(n, p).expect("p checked in (0,1)").sample(rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpha(n: u64, k: u64, p: f64, t: u64) -> u64 {
        Pmf::binomial(t, p).upper_quantile(k as f64 / n as f64)
    }

    #[test]
    fn binomial_quantile_known_values() {
        // SPEC §7 (scipy.stats.binom.ppf values).
        assert_eq!(alpha(100_000, 317, 0.01, 317), 9);
        assert_eq!(alpha(100_000, 317, 0.01, 634), 14);
        assert_eq!(alpha(1_000_000, 1000, 0.001, 1000), 5);
        assert_eq!(alpha(1_000_000, 1000, 0.001, 2000), 8);
    }

    #[test]
    fn quantile_matches_cdf_definition() {
        // Brute force: smallest x with CDF(x) >= q, from pmf summed upward.
        for &(t, p, upper) in &[
            (500u64, 0.02, 0.003),
            (63_246, 0.01, 3.16e-5),
            (40, 0.5, 0.1),
        ] {
            let d = Pmf::binomial(t, p);
            let mut cdf = 0.0;
            let mut want = None;
            for (i, &q) in d.pmf.iter().enumerate() {
                cdf += q;
                if cdf >= 1.0 - upper - 1e-12 {
                    want = Some(d.lo + i as u64);
                    break;
                }
            }
            assert_eq!(Some(d.upper_quantile(upper)), want, "t={t} p={p}");
        }
    }

    #[test]
    fn ln_fast_matches_ln() {
        let mut r = Stream::new(3);
        for _ in 0..100_000 {
            let x = r.uniform();
            let (a, b) = (ln_fast(x), x.ln());
            assert!(
                (a - b).abs() <= 2e-13 * b.abs().max(1e-300) + 1e-300,
                "x={x}: {a} vs {b}"
            );
        }
        for x in [
            1.0,
            2.0,
            0.5,
            1e-300,
            1e300,
            std::f64::consts::SQRT_2,
            0.7071067811865476,
        ] {
            assert!(
                (ln_fast(x) - x.ln()).abs() <= 1e-12 * x.ln().abs().max(1.0),
                "x={x}"
            );
        }
    }

    #[test]
    fn ln_gamma_factorials() {
        let mut f = 1.0f64;
        for n in 1..30u64 {
            f *= n as f64;
            assert!((ln_gamma(n as f64 + 1.0) - f.ln()).abs() < 1e-10, "n={n}");
        }
    }

    #[test]
    fn binomial_pmf_moments() {
        let d = Pmf::binomial(2000, 0.001);
        let s: f64 = d.pmf.iter().sum();
        let m: f64 = d
            .pmf
            .iter()
            .enumerate()
            .map(|(i, q)| (d.lo + i as u64) as f64 * q)
            .sum();
        assert!((s - 1.0).abs() < 1e-12);
        assert!((m - 2.0).abs() < 1e-9);
    }

    #[test]
    fn sum_of_binomials_matches_merged() {
        let a = Pmf::sum_of_binomials(&[(300, 0.01), (700, 0.01)]);
        let b = Pmf::binomial(1000, 0.01);
        assert_eq!(a.lo, b.lo);
        for (x, y) in a.pmf.iter().zip(&b.pmf) {
            assert!((x - y).abs() < 1e-12);
        }
        // Distinct p: mean and variance add.
        let c = Pmf::sum_of_binomials(&[(300, 0.01), (700, 0.03)]);
        let m: f64 = c
            .pmf
            .iter()
            .enumerate()
            .map(|(i, q)| (c.lo + i as u64) as f64 * q)
            .sum();
        assert!((m - (3.0 + 21.0)).abs() < 1e-9);
    }

    #[test]
    fn truncated_normal_tail_mean() {
        // E[Z | Z > a] = φ(a) / (1 − Φ(a)); for a = 2.5 this is 2.8227 (sd of
        // the conditional ≈ 0.30). 40000 draws: s.e. 0.0015; allow 5 s.e.
        for seed in 0..4 {
            let mut r = Stream::keyed(seed, &[1]);
            let n = 40_000;
            let m: f64 = (0..n)
                .map(|_| truncated_normal(2.5, 1e9, &mut r))
                .sum::<f64>()
                / n as f64;
            assert!((m - 2.8227).abs() < 0.0075, "seed {seed}: mean {m}");
        }
        // Centre: a = -1 → E = φ(1)/Φ(1) = 0.2876.
        let mut r = Stream::keyed(9, &[1]);
        let m: f64 = (0..40_000)
            .map(|_| truncated_normal(-1.0, 1e9, &mut r))
            .sum::<f64>()
            / 40_000.0;
        assert!((m - 0.2876).abs() < 0.01, "mean {m}");
        // Narrow window stays inside.
        for _ in 0..1000 {
            let z = truncated_normal(3.0, 3.1, &mut r);
            assert!((3.0..=3.1).contains(&z));
        }
    }

    #[test]
    fn exact_tail_distribution_chi_square() {
        // Tail of Binomial(2000, 0.001) at x >= 5: compare draw counts with the
        // conditional pmf (bins 5, 6, 7, >=8); chi-square 3 d.o.f., 99.9%: 16.27.
        let d = Pmf::binomial(2000, 0.001);
        let tail: Vec<f64> = (5..d.hi() + 1)
            .map(|x| d.pmf[(x - d.lo) as usize])
            .collect();
        let s: f64 = tail.iter().sum();
        let probs = [
            tail[0] / s,
            tail[1] / s,
            tail[2] / s,
            tail[3..].iter().sum::<f64>() / s,
        ];
        for seed in 0..4 {
            let mut r = Stream::keyed(seed, &[3]);
            let n = 50_000;
            let xs = sample_tail(&d, 5, 2000, n, TailSampler::Exact, &mut r);
            let mut bins = [0f64; 4];
            for x in xs {
                assert!(x >= 5.0);
                bins[((x as usize) - 5).min(3)] += 1.0;
            }
            let chi: f64 = (0..4)
                .map(|i| (bins[i] - n as f64 * probs[i]).powi(2) / (n as f64 * probs[i]))
                .sum();
            assert!(chi < 16.27, "seed {seed}: chi {chi}");
        }
    }

    #[test]
    fn normal_table_matches_rounded_truncated_normal() {
        // The tabulated law of round(μ + σZ), Z truncated to [a, b], against
        // 40000 direct draws: chi-square over the values 8, 9, 10, >=11
        // (3 d.o.f.; 99.9% quantile 16.27), four seeds.
        let d = Pmf::binomial(2000, 0.001);
        let (alpha, t) = (8u64, 2000u64);
        let table = TailTable::new(&d, alpha, t, TailSampler::Normal);
        let tot = table.cum[table.cum.len() - 1];
        let mass = |i: usize| (table.cum[i] - if i == 0 { 0.0 } else { table.cum[i - 1] }) / tot;
        let probs = [mass(0), mass(1), mass(2), 1.0 - mass(0) - mass(1) - mass(2)];
        let sd = d.var.sqrt();
        let (a, b) = ((alpha as f64 - d.mean) / sd, (t as f64 - d.mean) / sd);
        for seed in 0..4 {
            let mut r = Stream::keyed(seed, &[8]);
            let n = 40_000;
            let mut bins = [0f64; 4];
            for _ in 0..n {
                let x = (d.mean + sd * truncated_normal(a, b, &mut r)).round() as u64;
                bins[(x - alpha).min(3) as usize] += 1.0;
            }
            let chi: f64 = (0..4)
                .map(|i| (bins[i] - n as f64 * probs[i]).powi(2) / (n as f64 * probs[i]))
                .sum();
            assert!(
                chi < 16.27,
                "seed {seed}: chi {chi}, bins {bins:?}, probs {probs:?}"
            );
        }
    }

    #[test]
    fn normal_tail_respects_bounds() {
        let d = Pmf::binomial(634, 0.01);
        let mut r = Stream::keyed(1, &[3]);
        let xs = sample_tail(&d, 14, 634, 10_000, TailSampler::Normal, &mut r);
        assert!(xs
            .iter()
            .all(|&x| (14.0..=634.0).contains(&x) && x.fract() == 0.0));
    }

    #[test]
    fn sample_distinct_is_uniform_and_distinct() {
        // Each of 20 positions is picked with probability 5/20; 20000 draws of 5:
        // chi-square over 20 cells (19 d.o.f.; 99.9%: 43.8).
        for &(seed, x) in &[(0u64, 5u64), (1, 15), (2, 5), (3, 15)] {
            let mut r = Stream::keyed(seed, &[4]);
            let mut scratch = Vec::new();
            let mut counts = [0f64; 20];
            let reps = 20_000;
            for _ in 0..reps {
                let s = sample_distinct(20, x, &mut r, &mut scratch);
                assert_eq!(s.len(), x as usize);
                assert!(s.windows(2).all(|w| w[0] < w[1]));
                for v in s {
                    counts[v as usize] += 1.0;
                }
            }
            let e = reps as f64 * x as f64 / 20.0;
            let chi: f64 = counts.iter().map(|c| (c - e).powi(2) / e).sum();
            assert!(chi < 43.8, "seed {seed} x {x}: chi {chi}");
            assert!(scratch.iter().all(|&w| w == 0), "scratch left dirty");
        }
        // The huge-range path.
        let mut r = Stream::keyed(5, &[4]);
        let s = sample_distinct(1 << 40, 1000, &mut r, &mut Vec::new());
        assert_eq!(s.len(), 1000);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bernoulli_positions_count() {
        // Count over 10^6 positions at p = 0.01: mean 10^4, sd 99.5; 5 sd.
        for seed in 0..4 {
            let mut r = Stream::keyed(seed, &[6]);
            let mut c = 0u64;
            let mut last = None;
            bernoulli_positions(1_000_000, 0.01, &mut r, |i| {
                assert!(last.map_or(true, |l| i > l));
                last = Some(i);
                c += 1;
            });
            assert!((c as f64 - 10_000.0).abs() < 5.0 * 99.5, "seed {seed}: {c}");
        }
    }
}
