//! The `auto` planner: picks, per fiber, the narrowest formats that are exact
//! (or within the stated tolerance) for the fiber's n, p, β, w_max, k and the
//! run length, and reports the choice and the memory it saves.
//!
//! Rules, in order (all assume β of the fiber stays constant for the run):
//! - **layout**: bit-packed rows when they are smaller than CSR, i.e. when
//!   1/(8p) bytes per synapse beats the CSR cost (p ≳ 1/16 for u16 indices);
//!   learned weights then live in the side table (exact, f32).
//! - **indices**: block-local u16 whenever the per-(row, block) segment table
//!   costs less than the 2 bytes it saves.
//! - **weights**: β = 0 → `bit` (every weight is 1, exact). Otherwise
//!   `log-u8`, exact while no synapse is potentiated more than 254 times or
//!   w_max is reached within 254 codes — true when the run has at most 254
//!   steps or w_max ≤ (1+β)^254. Otherwise f16 with stochastic rounding
//!   (unbiased, relative error ≤ 2⁻¹¹ per update) if the largest reachable
//!   weight stays below f16's 65 504, else f32.
//! - **accumulator**: f32 on the CPU (summation order is fixed there).

use super::*;

/// Inputs of the planner for one fiber.
#[derive(Clone, Copy, Debug)]
pub struct FiberShape {
    pub n_src: u64,
    pub n_tgt: u64,
    pub p: f64,
    pub beta: f64,
    pub w_max: Option<f64>,
    /// Winners per step of the target area.
    pub k: u64,
    /// Number of steps the run will take, when known.
    pub steps: Option<u64>,
}

/// The planner's decision for one fiber.
#[derive(Clone, Debug)]
pub struct Plan {
    pub format: FiberFormat,
    /// Why each choice was made.
    pub reasons: Vec<String>,
    /// Predicted bytes of the fiber in the chosen format and in the f32/u32 reference.
    pub bytes: f64,
    pub reference_bytes: f64,
}

/// Chooses the formats of one fiber.
pub fn plan(s: &FiberShape) -> Plan {
    let synapses = s.n_src as f64 * s.n_tgt as f64 * s.p;
    let mut reasons = Vec::new();
    let blocks = s.n_tgt.div_ceil(1 << 16) as f64;
    let seg_cost = 4.0 * blocks / (s.n_tgt as f64 * s.p).max(1e-9);
    let indices = if seg_cost < 2.0 {
        reasons.push(format!(
            "u16 indices: {blocks} column block(s), {seg_cost:.4} B/synapse of segment table"
        ));
        IndexFormat::U16
    } else {
        reasons.push("u32 indices: rows too sparse for the u16 segment table to pay off".into());
        IndexFormat::U32
    };
    let exact_log =
        s.steps.is_some_and(|t| t <= 254) || s.w_max.is_some_and(|c| c <= (1.0 + s.beta).powi(254));
    let weights = if s.beta == 0.0 {
        reasons.push("bit weights: beta = 0, every weight stays 1".into());
        WeightFormat::Bit
    } else if exact_log {
        reasons.push(format!(
            "log-u8 weights: every weight is (1+{})^m with m <= 254 in this run (lossless)",
            s.beta
        ));
        WeightFormat::LogU8
    } else {
        let reach = s
            .w_max
            .unwrap_or_else(|| (1.0 + s.beta).powf(s.steps.unwrap_or(u64::MAX) as f64));
        if reach < 65_504.0 {
            reasons.push(format!(
                "f16 weights, stochastic rounding: weights reach at most {reach:.3e} < 65504"
            ));
            WeightFormat::F16
        } else {
            reasons.push(
                "f32 weights: run too long for log-u8 codes and weights may overflow f16".into(),
            );
            WeightFormat::F32
        }
    };
    let mut format = FiberFormat {
        weights,
        indices,
        layout: Layout::Csr,
        rounding: if weights == WeightFormat::F16 {
            Rounding::Stochastic
        } else {
            Rounding::Nearest
        },
        accumulator: Accumulator::F32,
    };
    let bitmap = FiberFormat {
        layout: Layout::Bitmap,
        weights: WeightFormat::Bit,
        ..format
    };
    if bitmap.bytes_per_synapse(s.n_tgt, s.p) < format.bytes_per_synapse(s.n_tgt, s.p) {
        reasons.push(format!(
            "bitmap rows: p = {} makes n bits per row cheaper than CSR",
            s.p
        ));
        format = bitmap;
    }
    Plan {
        format,
        bytes: synapses * format.bytes_per_synapse(s.n_tgt, s.p),
        reference_bytes: synapses * FiberFormat::REFERENCE.bytes_per_synapse(s.n_tgt, s.p),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_250k_plan_is_three_bytes() {
        let p = plan(&FiberShape {
            n_src: 250_000,
            n_tgt: 250_000,
            p: 0.01,
            beta: 0.05,
            w_max: None,
            k: 500,
            steps: Some(25),
        });
        assert_eq!(p.format.weights, WeightFormat::LogU8);
        assert_eq!(p.format.indices, IndexFormat::U16);
        assert_eq!(p.format.layout, Layout::Csr);
        let bps = p.bytes / (250_000f64 * 250_000.0 * 0.01);
        assert!(bps <= 3.01, "{bps}");
        assert!(p.reference_bytes / p.bytes > 2.6);
    }

    #[test]
    fn dense_unplastic_fiber_uses_bitmap() {
        let p = plan(&FiberShape {
            n_src: 1000,
            n_tgt: 1000,
            p: 0.5,
            beta: 0.0,
            w_max: None,
            k: 10,
            steps: None,
        });
        assert_eq!(p.format.layout, Layout::Bitmap);
        assert_eq!(p.format.weights, WeightFormat::Bit);
    }

    #[test]
    fn long_runs_fall_back_to_f16_or_f32() {
        let p = plan(&FiberShape {
            n_src: 1000,
            n_tgt: 1000,
            p: 0.01,
            beta: 0.01,
            w_max: None,
            k: 10,
            steps: Some(1000),
        });
        assert_eq!(p.format.weights, WeightFormat::F16);
        assert_eq!(p.format.rounding, Rounding::Stochastic);
        let p = plan(&FiberShape {
            n_src: 1000,
            n_tgt: 1000,
            p: 0.01,
            beta: 0.5,
            w_max: None,
            k: 10,
            steps: None,
        });
        assert_eq!(p.format.weights, WeightFormat::F32);
        let p = plan(&FiberShape {
            n_src: 1000,
            n_tgt: 1000,
            p: 0.01,
            beta: 0.5,
            w_max: Some(10.0),
            k: 10,
            steps: None,
        });
        assert_eq!(p.format.weights, WeightFormat::LogU8);
    }
}
