//! Storage formats of stored (explicit) fibers, SPEC §4: how weights,
//! synapse indices and rows are stored, how Hebbian products are rounded,
//! and how inputs are accumulated.
//!
//! Key decision: a format is *data* ([`FiberFormat`]), chosen per fiber (or
//! brain-wide) and possibly by the [`plan`] planner; the engine has one generic
//! body per operation and a single dispatch over the format (see
//! `engine::explicit`). Every format reports its bytes per synapse.

pub mod plan;
pub mod weights;

use crate::error::{invalid, KcapError, Result};

/// How one synapse weight is stored.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    #[default]
    F32,
    F16,
    Bf16,
    /// Logarithmic u8: weight = (1+β)^m, m stored (lossless for constant β);
    /// code 255 stands for w_max.
    LogU8,
    /// Unweighted: no per-synapse weight; potentiated weights (≠ 1) live in a
    /// per-row side table.
    Bit,
}

/// How a synapse's target id is stored in a CSR row.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IndexFormat {
    #[default]
    U32,
    /// Block-local u16: rows are split into 65 536-wide column blocks.
    U16,
}

/// Row layout.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Compressed sparse rows: indices (+ weights).
    #[default]
    Csr,
    /// One bit per possible target; learned weights in the side table.
    Bitmap,
}

/// Rounding of the Hebbian product `w·(1+β)` into a narrow weight format.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Round to nearest even (biased: small updates can vanish).
    #[default]
    Nearest,
    /// Round up with probability equal to the fractional distance to the
    /// next representable value (unbiased), bits from the counter-based generator.
    Stochastic,
}

/// Input accumulator.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Accumulator {
    /// f32 sums in a fixed order (deterministic on the CPU).
    #[default]
    F32,
    /// Fixed-point i64 with [`FIXED_FRAC_BITS`] fractional bits: associative,
    /// hence bitwise reproducible on any backend and thread count.
    Fixed,
}

/// Fractional bits of the fixed-point accumulator (resolution 2⁻²⁴ ≈ 6e-8;
/// sums up to 2³⁹ ≈ 5.5e11; larger sums saturate there, in any order).
pub const FIXED_FRAC_BITS: u32 = 24;

/// The complete storage format of one fiber.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(default, deny_unknown_fields)]
pub struct FiberFormat {
    pub weights: WeightFormat,
    pub indices: IndexFormat,
    pub layout: Layout,
    pub rounding: Rounding,
    pub accumulator: Accumulator,
}

impl FiberFormat {
    /// The f32 reference: f32 weights, u32 indices, CSR, f32 sums.
    pub const REFERENCE: FiberFormat = FiberFormat {
        weights: WeightFormat::F32,
        indices: IndexFormat::U32,
        layout: Layout::Csr,
        rounding: Rounding::Nearest,
        accumulator: Accumulator::F32,
    };

    /// Bytes per stored synapse for a fiber of `n_tgt` targets and density
    /// `p` (bitmap rows cost n_tgt bits per row, i.e. 1/(8p) bytes per synapse).
    pub fn bytes_per_synapse(&self, n_tgt: u64, p: f64) -> f64 {
        match self.layout {
            Layout::Bitmap => 1.0 / (8.0 * p),
            Layout::Csr => {
                let idx = match self.indices {
                    IndexFormat::U32 => 4.0,
                    IndexFormat::U16 => {
                        2.0 + 4.0 * (n_tgt.div_ceil(1 << 16) as f64) / (n_tgt as f64 * p).max(1.0)
                    }
                };
                idx + self.weights.bytes()
            }
        }
    }

    /// Checks the combination against a fiber's size.
    pub fn validate(&self, n_tgt: u64) -> Result<()> {
        if self.indices == IndexFormat::U32 && n_tgt > u32::MAX as u64 {
            return Err(invalid(
                "indices",
                "u32",
                format!("a target area of {n_tgt} neurons needs more than 32 bits"),
            ));
        }
        if self.layout == Layout::Bitmap && self.weights != WeightFormat::Bit {
            return Err(KcapError::Unsupported(format!(
                "layout = \"bitmap\" keeps learned weights in a side table: use weights = \"bit\", not {:?}",
                self.weights.name()
            )));
        }
        Ok(())
    }

    /// Short label, e.g. `f16/u16/csr/stochastic/f32`.
    pub fn label(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.weights.name(),
            match self.indices {
                IndexFormat::U32 => "u32",
                IndexFormat::U16 => "u16",
            },
            match self.layout {
                Layout::Csr => "csr",
                Layout::Bitmap => "bitmap",
            },
            match self.rounding {
                Rounding::Nearest => "nearest",
                Rounding::Stochastic => "stochastic",
            },
            match self.accumulator {
                Accumulator::F32 => "f32",
                Accumulator::Fixed => "fixed",
            }
        )
    }
}

impl WeightFormat {
    pub fn bytes(&self) -> f64 {
        match self {
            WeightFormat::F32 => 4.0,
            WeightFormat::F16 | WeightFormat::Bf16 => 2.0,
            WeightFormat::LogU8 => 1.0,
            WeightFormat::Bit => 0.0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::LogU8 => "log-u8",
            WeightFormat::Bit => "bit",
        }
    }
}

macro_rules! from_str_enum {
    ($t:ty, $what:literal, $($s:literal => $v:expr),+) => {
        impl std::str::FromStr for $t {
            type Err = KcapError;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok($v),)+
                    _ => Err(invalid($what, format!("{s:?}"), concat!("expected one of", $(" \"", $s, "\""),+))),
                }
            }
        }
    };
}

from_str_enum!(WeightFormat, "weights", "f32" => WeightFormat::F32, "f16" => WeightFormat::F16, "bf16" => WeightFormat::Bf16, "log-u8" => WeightFormat::LogU8, "bit" => WeightFormat::Bit);
from_str_enum!(IndexFormat, "indices", "u32" => IndexFormat::U32, "u16" => IndexFormat::U16);
from_str_enum!(Layout, "layout", "csr" => Layout::Csr, "bitmap" => Layout::Bitmap);
from_str_enum!(Rounding, "rounding", "nearest" => Rounding::Nearest, "stochastic" => Rounding::Stochastic);
from_str_enum!(Accumulator, "accumulator", "f32" => Accumulator::F32, "fixed" => Accumulator::Fixed);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_synapse_of_common_formats() {
        let f = FiberFormat {
            weights: WeightFormat::LogU8,
            indices: IndexFormat::U16,
            ..Default::default()
        };
        let b = f.bytes_per_synapse(250_000, 0.01);
        assert!(b > 3.0 && b < 3.01, "{b}");
        assert_eq!(FiberFormat::REFERENCE.bytes_per_synapse(1000, 0.1), 8.0);
        let bm = FiberFormat {
            layout: Layout::Bitmap,
            weights: WeightFormat::Bit,
            ..Default::default()
        };
        assert_eq!(bm.bytes_per_synapse(1000, 0.25), 0.5);
    }

    #[test]
    fn parse_and_reject_names() {
        assert_eq!(
            "log-u8".parse::<WeightFormat>().unwrap(),
            WeightFormat::LogU8
        );
        let e = "f8".parse::<WeightFormat>().unwrap_err().to_string();
        assert!(e.contains("\"f8\"") && e.contains("\"bf16\""), "{e}");
        assert!(FiberFormat {
            layout: Layout::Bitmap,
            ..Default::default()
        }
        .validate(10)
        .is_err());
    }
}
