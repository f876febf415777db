// topk_u16.cu — k-cap over unsigned 16-bit values (the procedural engine's
// stored event counts: a count's order is its value's). Entry points:
// topk_init_u16, topk_sample_u16, topk_threshold_u16, topk_prefilter_u16,
// topk_pass_u16 (see topk.cuh; launched by src/ops/topk.rs, which checks
// every length first).
#include "common.cuh"

#define KCAP_VBITS 16
#define KCAP_VEC 8
#define KCAP_SUFFIX(name) name##_u16

__device__ __forceinline__ u32 kcap_vkey_at(const void* p, u64 j) {
    return (u32)((const u16*)p)[j];
}

// Value e of 8 u16 packed little-endian in a uint4.
__device__ __forceinline__ u32 kcap_vkey_vec(const uint4& r, int e) {
    const u32 w = (e >> 1) == 0 ? r.x : ((e >> 1) == 1 ? r.y : ((e >> 1) == 2 ? r.z : r.w));
    return (e & 1) ? (w >> 16) : (w & 0xffffu);
}

// Any of the 8 values >= t, two per 32-bit word with SIMD compares.
__device__ __forceinline__ bool kcap_any_ge_vec(const uint4& r, u32 t) {
    const u32 t2 = t | (t << 16);
    return (__vcmpgeu2(r.x, t2) | __vcmpgeu2(r.y, t2) | __vcmpgeu2(r.z, t2) | __vcmpgeu2(r.w, t2)) != 0;
}

#include "topk.cuh"

KCAP_TOPK_ENTRY_POINTS
