// accumulate_rows_f32.cu — input accumulation along the rows of the firing
// neurons, deterministic by fixed-point arithmetic.
//
// acc[to] += round(w * 2^s) for every synapse (to, w) of every firing row of
// a CSR matrix (row_ptr, to, w). acc holds fixed-point numbers with s <= 32
// fraction bits (Q31.32 at most) in two's-complement 64-bit integers; integer addition is associative, so the
// sums do not depend on the order the atomics land in. The launcher
// (src/ops/accumulate.rs) checks lengths, ids and that no sum can overflow
// (|sum| < 2^(62-s)). accumulate_rows_f32_finish then adds the sums to the f32
// inputs: inputs[i] = f32(f64(inputs[i]) + f64(acc[i]) * 2^-s).
#include "common.cuh"

// One warp per firing row (grid-stride over rows), lanes stride the row.
// Rows >= nrows, offsets >= nnz and targets >= n are skipped.
extern "C" __global__ void accumulate_rows_f32(const u64* __restrict__ row_ptr, u32 nrows,
                                               const u32* __restrict__ firing, u32 nfiring,
                                               const u32* __restrict__ to, const float* __restrict__ w, u64 nnz,
                                               double scale, u64* __restrict__ acc, u32 n) {
    const u32 lane = threadIdx.x & 31u;
    const u64 warp = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 f = warp; f < nfiring; f += nwarps) {
        const u32 r = firing[f];
        if (r >= nrows) continue;
        const u64 e0 = row_ptr[r], e1 = min(row_ptr[r + 1], nnz);
        for (u64 e = e0 + lane; e < e1; e += 32) {
            const u32 t = to[e];
            // w * 2^s is exact in f64; rounding to the integer is the only rounding.
            const i64 q = __double2ll_rn(__dmul_rn((double)w[e], scale));
            if (t < n) atomicAdd(&acc[t], (u64)q);
        }
    }
}

// inputs[i] = f32(f64(inputs[i]) + f64(acc[i]) * 2^-s)
extern "C" __global__ void accumulate_rows_f32_finish(const u64* __restrict__ acc, double inv_scale,
                                                      float* __restrict__ inputs, u32 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const double s = __dmul_rn((double)(i64)acc[i], inv_scale);
        inputs[i] = __double2float_rn(__dadd_rn((double)inputs[i], s));
    }
}
