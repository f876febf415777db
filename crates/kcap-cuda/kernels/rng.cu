// rng.cu — the counter-based generator and ln_fast on the device, as kernels
// for the bit-identity tests against crates/kcap/src/rng.rs and stats.rs.
// Launched by src/ops/rng.rs.
#include <cuda_fp16.h>
#include "common.cuh"

// out[i] = word(key, counter0 + i)
extern "C" __global__ void rng_word_u64(u64 key, u64 counter0, u64* out, u32 n) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = kcap_word(key, counter0 + i);
    }
}

// out[i] = derive(parents[i], words[0..nwords])
extern "C" __global__ void rng_derive_u64(const u64* parents, const u64* words, u32 nwords, u64* out, u32 n) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = kcap_derive(parents[i], words, nwords);
    }
}

// out[i] = unit_open(word(key, i)) and lnout[i] = ln_fast(out[i])
extern "C" __global__ void rng_uniform_ln_f64(u64 key, double* out, double* lnout, u32 n) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const double u = kcap_unit_open(kcap_word(key, i));
        out[i] = u;
        lnout[i] = kcap_ln_fast(u);
    }
}

// out[i] = ln_fast(x[i]) for arbitrary positive normal x
extern "C" __global__ void ln_fast_f64(const double* x, double* out, u32 n) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = kcap_ln_fast(x[i]);
    }
}

// out[i] = f32(unit_open(word(key, i))): uniform in (0, 1], like torch.rand
// (values within 2^-25 of 1 round to 1.0f). For benchmarks and tests.
extern "C" __global__ void rng_uniform_f32(u64 key, float* out, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        out[i] = __double2float_rn(kcap_unit_open(kcap_word(key, i)));
    }
}

// The same rounded on to IEEE half (round to nearest even), as bit patterns.
extern "C" __global__ void rng_uniform_f16(u64 key, u16* out, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        const float f = __double2float_rn(kcap_unit_open(kcap_word(key, i)));
        out[i] = __half_as_ushort(__float2half_rn(f));
    }
}

// out[i] = the Lemire multiply-shift of word(key, i) below `bound`
// (rng::Stream::below): uniform u32 targets for benchmarks.
extern "C" __global__ void rng_below_u32(u64 key, u64 bound, u32* out, u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        out[i] = (u32)__umul64hi(kcap_word(key, i), bound);
    }
}
