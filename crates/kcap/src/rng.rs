//! The one counter-based random generator of kcap.
//!
//! Every random draw in a simulation is a pure function of
//! `(brain seed, stream key, counter)`: the stream key names *what* is being
//! drawn (which step, which area, which neuron, which purpose) and the counter
//! walks through that stream. No generator state is shared between threads,
//! so a run gives the same result on any thread count, and a GPU kernel can
//! reproduce any draw from the same three numbers.
//!
//! The mixing function is SplitMix64's finaliser (Steele, Lea, Flood 2014,
//! the output function of `java.util.SplittableRandom`), applied to
//! `key + counter * GOLDEN`. It passes BigCrush as a stream generator and is
//! three multiplies per 64 bits, cheap enough to regenerate connectivity.

use rand::RngCore;

/// The Weyl increment of SplitMix64 (2^64 / golden ratio, odd).
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output mixer: a bijection of u64 with full avalanche.
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a stream key from a parent key and a list of words (purpose,
/// step, area, neuron…). Order matters: `derive(k, &[1, 2]) != derive(k, &[2, 1])`.
#[inline]
pub fn derive(parent: u64, words: &[u64]) -> u64 {
    let mut h = mix64(parent ^ 0x5851_F42D_4C95_7F2D);
    for &w in words {
        h = mix64(h.wrapping_add(GOLDEN) ^ mix64(w.wrapping_add(0x2545_F491_4F6C_DD1D)));
    }
    h
}

/// The `counter`-th 64-bit word of stream `key`.
#[inline(always)]
pub fn word(key: u64, counter: u64) -> u64 {
    mix64(key.wrapping_add(counter.wrapping_mul(GOLDEN)))
}

/// Maps 64 random bits to a uniform f64 in the open interval (0, 1).
#[inline(always)]
pub fn unit_open(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// A sequential view of one counter-based stream, usable wherever a
/// `rand::RngCore` is expected (e.g. `rand_distr` samplers).
#[derive(Clone, Debug)]
pub struct Stream {
    key: u64,
    counter: u64,
}

impl Stream {
    /// The stream with the given key, starting at counter 0.
    pub fn new(key: u64) -> Self {
        Stream { key, counter: 0 }
    }

    /// A stream keyed by `derive(parent, words)`.
    pub fn keyed(parent: u64, words: &[u64]) -> Self {
        Self::new(derive(parent, words))
    }

    /// How many words the stream has handed out (the next word is
    /// `word(key, counter)`): lets a GPU continue a stream the host started.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Uniform f64 in (0, 1).
    #[inline(always)]
    pub fn uniform(&mut self) -> f64 {
        unit_open(self.next_u64())
    }

    /// Uniform integer in `[0, bound)` (bound > 0), by Lemire's
    /// multiply-shift (bias < bound / 2^64, negligible for bound < 2^40).
    #[inline(always)]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// The next 64 random bits (same as `RngCore::next_u64`, without the import).
    #[inline(always)]
    pub fn next_u64_pub(&mut self) -> u64 {
        RngCore::next_u64(self)
    }

    /// Fills `out` with the next `out.len()` words: the same as that many
    /// `next_u64` calls, written as a loop over independent counters so that
    /// it vectorises.
    #[inline(always)]
    pub fn fill_words(&mut self, out: &mut [u64]) {
        let base = self.key.wrapping_add(self.counter.wrapping_mul(GOLDEN));
        for (t, w) in out.iter_mut().enumerate() {
            *w = mix64(base.wrapping_add((t as u64).wrapping_mul(GOLDEN)));
        }
        self.counter = self.counter.wrapping_add(out.len() as u64);
    }

    /// Standard normal by the Box–Muller transform (one value per call).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl RngCore for Stream {
    #[inline(always)]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        let w = word(self.key, self.counter);
        self.counter = self.counter.wrapping_add(1);
        w
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// Purpose tags for stream keys, so that two kinds of draw never share a
/// stream. The numbers are part of the reproducibility contract: changing one
/// changes every run.
pub mod purpose {
    pub const CANDIDATES: u64 = 1;
    pub const WIRING: u64 = 2;
    pub const OUTGOING: u64 = 3;
    pub const ACTIVATE: u64 = 4;
    pub const SUBSAMPLE: u64 = 5;
    pub const STOCHASTIC_ROUNDING: u64 = 6;
    pub const GRAPH: u64 = 7;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_words_continues_the_stream() {
        let mut a = Stream::new(11);
        let mut b = a.clone();
        let mut buf = [0u64; 37];
        a.fill_words(&mut buf[..5]);
        a.fill_words(&mut buf[5..]);
        let want: Vec<u64> = (0..37).map(|_| b.next_u64()).collect();
        assert_eq!(buf.to_vec(), want);
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn same_key_same_stream_and_keys_differ() {
        let a: Vec<u64> = (0..8).map(|c| word(derive(7, &[1, 2]), c)).collect();
        let b: Vec<u64> = (0..8).map(|c| word(derive(7, &[1, 2]), c)).collect();
        let c: Vec<u64> = (0..8).map(|c| word(derive(7, &[2, 1]), c)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_mean_and_variance() {
        // 10^6 draws: mean 1/2 with s.e. 2.9e-4, variance 1/12; 6-sigma bounds.
        for seed in 0..4 {
            let mut s = Stream::keyed(seed, &[99]);
            let n = 1_000_000;
            let xs: Vec<f64> = (0..n).map(|_| s.uniform()).collect();
            let m = xs.iter().sum::<f64>() / n as f64;
            let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            assert!((m - 0.5).abs() < 6.0 * 0.2887 / 1000.0, "mean {m}");
            assert!((v - 1.0 / 12.0).abs() < 0.001, "var {v}");
            assert!(xs.iter().all(|&x| x > 0.0 && x < 1.0));
        }
    }

    #[test]
    fn below_is_uniform_chi_square() {
        // 16 bins, 160000 draws: chi-square with 15 d.o.f.; 99.9% quantile is 37.7.
        for seed in 0..4 {
            let mut s = Stream::keyed(seed, &[5]);
            let mut bins = [0u64; 16];
            for _ in 0..160_000 {
                bins[s.below(16) as usize] += 1;
            }
            let e = 10_000.0;
            let chi: f64 = bins.iter().map(|&b| (b as f64 - e).powi(2) / e).sum();
            assert!(chi < 37.7, "chi-square {chi} for seed {seed}");
        }
    }
}
