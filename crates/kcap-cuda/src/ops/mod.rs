//! Launchers: one Rust function per kernel family, each checking sizes
//! before it launches anything.

pub mod accumulate;
pub mod explicit;
pub mod procedural;
pub mod rng;
pub mod topk;

use cudarc::driver::LaunchConfig;

/// A 1-D launch of `grid` blocks of `block` threads, no dynamic shared memory.
pub(crate) fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks for a grid-stride loop over `n` items: enough to fill the device
/// (`per_sm` blocks per multiprocessor), never more than the work needs.
pub(crate) fn grid_for(n: u64, block: u32, sm_count: u32, per_sm: u32) -> u32 {
    n.div_ceil(block as u64)
        .clamp(1, (sm_count.max(1) * per_sm) as u64) as u32
}
