// topk_f32.cu — k-cap over f32 values (dense vector or sparse candidate list).
// Entry points: topk_init_f32, topk_sample_f32, topk_threshold_f32,
// topk_prefilter_f32, topk_pass_f32 (see topk.cuh; launched by
// src/ops/topk.rs, which checks every length first).
#include "common.cuh"

#define KCAP_VBITS 32
#define KCAP_VEC 4
#define KCAP_SUFFIX(name) name##_f32

__device__ __forceinline__ u32 kcap_vkey_at(const void* p, u64 j) {
    return kcap_key_f32(((const u32*)p)[j]);
}

__device__ __forceinline__ u32 kcap_vkey_vec(const uint4& r, int e) {
    const u32 w = e == 0 ? r.x : (e == 1 ? r.y : (e == 2 ? r.z : r.w));
    return kcap_key_f32(w);
}

// Any of the 4 values' keys >= t: key = bits ^ (sign ? 0xffffffff : 0x80000000).
__device__ __forceinline__ bool kcap_any_ge_vec(const uint4& r, u32 t) {
    const u32 w[4] = {r.x, r.y, r.z, r.w};
    bool any = false;
#pragma unroll
    for (int i = 0; i < 4; ++i) any |= (w[i] ^ ((u32)((int)w[i] >> 31) | 0x80000000u)) >= t;
    return any;
}

#include "topk.cuh"

KCAP_TOPK_ENTRY_POINTS
