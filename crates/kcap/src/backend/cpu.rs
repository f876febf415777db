//! The CPU backend: rayon over fixed-size chunks.
//!
//! Parallel sums are made deterministic by splitting the work into a number
//! of chunks that depends only on the problem size (never on the thread
//! count), summing each chunk into its own buffer, and adding the buffers in
//! chunk order.

use super::{Backend, Syn};
use rayon::prelude::*;

/// Below this many synapses a step is summed on one thread: rayon's overhead
/// would exceed the work.
const PAR_MIN_SYNAPSES: usize = 1 << 18;
/// Number of partial-sum buffers in the parallel path (fixed, so the order
/// of floating-point additions is fixed).
const CHUNKS: usize = 8;

/// The CPU backend (rayon's global pool; its size does not change results).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn accumulate_rows(&self, rows: &[Vec<Syn>], firing: &[u32], inputs: &mut [f32]) {
        let total: usize = firing.iter().map(|&i| rows[i as usize].len()).sum();
        if total < PAR_MIN_SYNAPSES || firing.len() < CHUNKS {
            for &i in firing {
                for s in &rows[i as usize] {
                    inputs[s.to as usize] += s.w;
                }
            }
            return;
        }
        let len = inputs.len();
        let per = firing.len().div_ceil(CHUNKS);
        let partial: Vec<Vec<f32>> = firing
            .par_chunks(per)
            .map(|chunk| {
                let mut buf = vec![0f32; len];
                for &i in chunk {
                    for s in &rows[i as usize] {
                        buf[s.to as usize] += s.w;
                    }
                }
                buf
            })
            .collect();
        inputs
            .par_chunks_mut(4096)
            .enumerate()
            .for_each(|(c, out)| {
                let (base, n) = (c * 4096, out.len());
                for buf in &partial {
                    for (o, v) in out.iter_mut().zip(&buf[base..base + n]) {
                        *o += *v;
                    }
                }
            });
    }
}
