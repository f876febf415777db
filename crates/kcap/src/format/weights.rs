//! Weight codecs: decoding a stored weight to f32 and the Hebbian update
//! `w ← min(w·(1+β), w_max)` in each storage format, with nearest or
//! stochastic rounding.
//!
//! With constant β every weight is exactly (1+β)^m, so [`LogU8`] stores m and
//! the update is an integer increment — lossless. f16/bf16 round the product:
//! nearest rounding silently drops the update when β is below half an ulp
//! (bf16: β < 2⁻⁸, f16: β < 2⁻¹¹); stochastic rounding rounds up with
//! probability equal to the fractional position between the two neighbours,
//! so the expected stored weight equals the exact product.

use half::{bf16, f16};

/// One Hebbian step's parameters: multiplier 1+β and cap w_max (∞ if none).
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub mult: f32,
    pub cap: f32,
}

/// Uniform in [0, 1) from the top 24 bits (exact in f32).
#[inline(always)]
fn unit24(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// A narrow float type that weights can be stored in.
pub trait HalfLike: Copy + Send + Sync + 'static {
    const ONE: Self;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    fn to_bits(self) -> u16;
    fn from_bits(b: u16) -> Self;
}

macro_rules! half_like {
    ($t:ty) => {
        impl HalfLike for $t {
            const ONE: Self = <$t>::ONE;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            #[inline(always)]
            fn to_bits(self) -> u16 {
                <$t>::to_bits(self)
            }
            #[inline(always)]
            fn from_bits(b: u16) -> Self {
                <$t>::from_bits(b)
            }
        }
    };
}
half_like!(f16);
half_like!(bf16);

/// `x` (positive, finite) rounded into `T`: nearest-even, or stochastically
/// between the two neighbouring representable values using `bits`.
#[inline(always)]
pub fn round_half<T: HalfLike>(x: f32, stochastic: bool, bits: u64) -> T {
    let c = T::from_f32(x);
    if !stochastic {
        return c;
    }
    let cv = c.to_f32();
    if cv == x || !cv.is_finite() {
        return c;
    }
    // Positive values: neighbours differ by one in the bit pattern.
    let (lo, hi) = if cv < x {
        (c, T::from_bits(c.to_bits() + 1))
    } else {
        (T::from_bits(c.to_bits() - 1), c)
    };
    let (l, h) = (lo.to_f32(), hi.to_f32());
    if unit24(bits) < (x - l) / (h - l) {
        hi
    } else {
        lo
    }
}

/// Potentiates a half-precision weight.
#[inline(always)]
pub fn potentiate_half<T: HalfLike>(w: T, u: Update, stochastic: bool, bits: u64) -> T {
    let x = (w.to_f32() * u.mult).min(u.cap);
    round_half::<T>(x, stochastic, bits)
}

/// The log-domain u8 code of one fiber: code m ∈ [0, 254] is (1+β)^m, code
/// 255 is w_max (when set). `max_code` is the largest power code below the cap.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LogU8 {
    /// The β the codes were made for (the base is 1+β).
    pub beta: f64,
    pub w_max: Option<f64>,
    pub table: Vec<f32>,
    pub max_code: u8,
}

/// Code standing for w_max.
pub const LOG_CAP_CODE: u8 = 255;

impl LogU8 {
    pub fn new(beta: f64, w_max: Option<f64>) -> LogU8 {
        let base = 1.0 + beta;
        let mut table = vec![0f32; 256];
        let mut max_code = 254u8;
        for m in 0..255usize {
            let v = base.powi(m as i32);
            table[m] = v as f32;
            if let Some(c) = w_max {
                if v <= c {
                    max_code = m as u8;
                }
            }
        }
        table[255] = w_max.unwrap_or(f64::INFINITY) as f32;
        if beta == 0.0 {
            max_code = 0;
        }
        LogU8 {
            beta,
            w_max,
            table,
            max_code,
        }
    }

    #[inline(always)]
    pub fn decode(&self, m: u8) -> f32 {
        self.table[m as usize]
    }

    /// m ← m + 1, or the cap code once (1+β)^(m+1) would exceed w_max.
    /// Without w_max the code saturates at 254 (weight (1+β)^254).
    #[inline(always)]
    pub fn potentiate(&self, m: u8) -> u8 {
        if m == LOG_CAP_CODE {
            m
        } else if m < self.max_code {
            m + 1
        } else if self.w_max.is_some() {
            LOG_CAP_CODE
        } else {
            m
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn log_u8_is_exact_powers_and_caps() {
        let c = LogU8::new(0.05, Some(2.0));
        let mut m = 0u8;
        let mut w = 1.0f32;
        for _ in 0..40 {
            m = c.potentiate(m);
            w = (w * 1.05f32).min(2.0);
            assert!(
                (c.decode(m) - w).abs() <= 1e-5 * w,
                "{} vs {}",
                c.decode(m),
                w
            );
        }
        assert_eq!(m, LOG_CAP_CODE);
        assert_eq!(c.decode(m), 2.0);
    }

    #[test]
    fn nearest_rounding_drops_small_updates_stochastic_keeps_them() {
        // bf16 at beta = 0.001 < 2^-8: nearest never moves off 1.0.
        let u = Update {
            mult: 1.001,
            cap: f32::INFINITY,
        };
        let mut w = bf16::ONE;
        for _ in 0..100 {
            w = potentiate_half(w, u, false, 0);
        }
        assert_eq!(w.to_f32(), 1.0);
        // Stochastic: the mean over 2000 independent synapses after 100
        // updates is 1.001^100 = 1.1051 within 1% (ulp near 1.1 is 2^-7).
        let mut r = Stream::new(1);
        let mut sum = 0.0;
        for _ in 0..2000 {
            let mut w = bf16::ONE;
            for _ in 0..100 {
                w = potentiate_half(w, u, true, r.next_u64_pub());
            }
            sum += w.to_f32() as f64;
        }
        let mean = sum / 2000.0;
        assert!((mean - 1.001f64.powi(100)).abs() < 0.011, "mean {mean}");
    }

    #[test]
    fn stochastic_rounding_is_unbiased_per_step() {
        // E[round(x)] = x: 1.3 in f16 (ulp 2^-10), 100k draws, 6 s.e.
        let mut r = Stream::new(2);
        let x = 1.3f32;
        let n = 100_000;
        let mean: f64 = (0..n)
            .map(|_| round_half::<f16>(x, true, r.next_u64_pub()).to_f32() as f64)
            .sum::<f64>()
            / n as f64;
        let se = (2f64.powi(-10) / 2.0) / (n as f64).sqrt();
        assert!((mean - x as f64).abs() < 6.0 * se + 1e-7, "mean {mean}");
    }
}
