// topk_f16.cu — k-cap over IEEE half values (dense vector or sparse
// candidate list). Entry points: topk_init_f16, topk_sample_f16,
// topk_threshold_f16, topk_prefilter_f16, topk_pass_f16 (see topk.cuh;
// launched by src/ops/topk.rs, which checks every length first).
#include <cuda_fp16.h>
#include "common.cuh"

#define KCAP_VBITS 16
#define KCAP_VEC 8
#define KCAP_SUFFIX(name) name##_f16

__device__ __forceinline__ u32 kcap_vkey_at(const void* p, u64 j) {
    return kcap_key_f16((u32)__half_as_ushort(((const __half*)p)[j]));
}

// Value e of 8 halves packed little-endian in a uint4.
__device__ __forceinline__ u32 kcap_vkey_vec(const uint4& r, int e) {
    const u32 w = (e >> 1) == 0 ? r.x : ((e >> 1) == 1 ? r.y : ((e >> 1) == 2 ? r.z : r.w));
    return kcap_key_f16((e & 1) ? (w >> 16) : (w & 0xffffu));
}

// Any of the 8 values' keys >= t, two halves per 32-bit word with SIMD
// compares: key = h ^ (sign ? 0xffff : 0x8000) in each half.
__device__ __forceinline__ bool kcap_any_ge_vec(const uint4& r, u32 t) {
    const u32 w[4] = {r.x, r.y, r.z, r.w};
    const u32 t2 = t | (t << 16);
    u32 any = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const u32 key2 = w[i] ^ ((((w[i] >> 15) & 0x00010001u) * 0x7fffu) | 0x80008000u);
        any |= __vcmpgeu2(key2, t2);
    }
    return any != 0;
}

#include "topk.cuh"

KCAP_TOPK_ENTRY_POINTS
