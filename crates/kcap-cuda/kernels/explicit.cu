// explicit.cu — the explicit engine's stored fibers on the device
// (crates/kcap/src/engine/explicit.rs; launchers in src/ops/explicit.rs).
//
// Layout (FiberParts in the kcap crate): row r's synapses in column block b
// (65 536 targets wide, nb blocks) are entries seg[r*nb+b] .. seg[r*nb+b+1]
// of idx (u32: absolute target; u16: offset in the block) and w (f32, f16 or
// bf16 bits, or a log-u8 code decoded through a 256-entry table; no array
// for bit weights, whose stored weight is 1). Bitmap rows: `words` u64 per
// row, bit j of row r = bit (j & 63) of bits[r*words + j/64].
//
// Bit weights keep their learned weights in a side table on the host; a
// step hands the kernels the firing rows' entries ("side": per firing
// position f, entries side[f]..side[f+1] of side + nfiring + 1, each
// target << 32 | the f32 bits of w - 1), added after the row's unit
// synapses, as the host does; the Hebbian update lists the synapses from
// firing rows onto winners (row << 32 | target) for the host to apply.
//
// Every result is the host's bit for bit:
// - generation continues each (row, block) stream where the host's binomial
//   count left it and draws distinct offsets in the host's order (RowGen::block);
// - accumulation adds rows in firing order per target (one CTA per target
//   tile walks the firing rows in order), so even f32 sums round the same;
//   the fixed-point accumulator is the host's, saturation included; a
//   bitmap CTA walks the firing rows in order too, each thread owning 8
//   targets of the tile;
// - the Hebbian update uses the host's rounding and random bits
//   (word(derive(sr_key, row), n) for the row's n-th potentiated synapse).
#include <cuda_fp16.h>
#include "common.cuh"

#define KCAP_BLOCK_W 65536u
// Targets per accumulation CTA (its shared-memory tile).
#define KCAP_TILE 4096u
#define KCAP_GEN_WARPS 4

// ---- generation --------------------------------------------------------------

// One warp per (row, block) item, items [item0, item0 + nitems) of the
// fiber (item = row * nb + b); seg and pos hold those items' entries only
// (seg: nitems + 1 offsets), so a batch of rows can be drawn into a buffer
// of its own. Writes item item0 + i's targets at idx[seg[i] - seg[0]..]
// in the host's order. complement: the drawn offsets are the ones left out
// (then the targets are written in increasing order). Writes past nnz are
// skipped (the launcher checks seg; this only guards memory).
template <typename I>
__device__ void gen_items(u64 key, u64 n_tgt, u32 nb, u64 item0, u64 nitems, const u64* __restrict__ seg,
                          const u32* __restrict__ pos, u32 complement, I* __restrict__ idx, u64 nnz) {
    __shared__ u32 seen_all[KCAP_GEN_WARPS][KCAP_BLOCK_W / 32];
    __shared__ u32 stage_all[KCAP_GEN_WARPS][64];
    const u32 lane = threadIdx.x & 31u, wib = threadIdx.x >> 5;
    u32* seen = seen_all[wib];
    u32* stage = stage_all[wib];
    for (u32 i = lane; i < KCAP_BLOCK_W / 32; i += 32) seen[i] = 0;
    __syncwarp();
    const u32 lt = (1u << lane) - 1u;
    const u64 nwarps = (u64)gridDim.x * (blockDim.x >> 5);
    for (u64 it = (u64)blockIdx.x * (blockDim.x >> 5) + wib; it < nitems; it += nwarps) {
        const u64 item = item0 + it;
        const u64 row = item / nb, b = item % nb;
        const u64 len = min((u64)KCAP_BLOCK_W, n_tgt - b * KCAP_BLOCK_W);
        const u64 s0 = seg[it] - seg[0], count = seg[it + 1] - seg[it];
        const u64 need = complement ? len - count : count;
        const u64 words[2] = {row, b};
        const u64 k = kcap_derive(key, words, 2);
        const u64 add = sizeof(I) == 4 ? b * KCAP_BLOCK_W : 0;
        u64 ctr = pos[it];
        u64 got = 0;
        while (got < need) {
            const u64 w = kcap_word(k, ctr + lane);
            const u32 o0 = (u32)(((w & 0xffffffffULL) * len) >> 32);
            const u32 o1 = (u32)(((w >> 32) * len) >> 32);
            stage[2 * lane] = o0;
            stage[2 * lane + 1] = o1;
            __syncwarp();
            // A draw is new if not seen before this batch and not drawn
            // earlier in it (draw order: word 0 low, word 0 high, word 1 ...).
            bool a0 = !((seen[o0 >> 5] >> (o0 & 31)) & 1u);
            bool a1 = !((seen[o1 >> 5] >> (o1 & 31)) & 1u) && o1 != o0;
            for (u32 d = 0; d < 2 * lane; ++d) {
                const u32 v = stage[d];
                a0 = a0 && v != o0;
                a1 = a1 && v != o1;
            }
            const u32 m0 = __ballot_sync(0xffffffffu, a0), m1 = __ballot_sync(0xffffffffu, a1);
            const u32 r0 = __popc(m0 & lt) + __popc(m1 & lt);
            const u32 r1 = r0 + (a0 ? 1u : 0u);
            const u64 left = need - got;
            if (a0 && r0 < left) {
                atomicOr(&seen[o0 >> 5], 1u << (o0 & 31));
                const u64 e = s0 + got + r0;
                if (!complement && e < nnz) idx[e] = (I)(o0 + add);
            }
            if (a1 && r1 < left) {
                atomicOr(&seen[o1 >> 5], 1u << (o1 & 31));
                const u64 e = s0 + got + r1;
                if (!complement && e < nnz) idx[e] = (I)(o1 + add);
            }
            got += min((u64)(__popc(m0) + __popc(m1)), left);
            ctr += 32;
            __syncwarp();
        }
        const u32 nw = (u32)((len + 31) / 32);
        if (complement) {
            // Targets not drawn, increasing; then clear the whole bitmap.
            u64 at = s0;
            for (u32 base = 0; base < nw; base += 32) {
                const u32 wi = base + lane;
                u32 free_bits = 0;
                if (wi < nw) {
                    free_bits = ~seen[wi];
                    const u32 tail = (u32)(len - (u64)wi * 32);
                    if (tail < 32) free_bits &= (1u << tail) - 1u;
                }
                u32 c = __popc(free_bits), incl = c;
                for (u32 o = 1; o < 32; o <<= 1) {
                    const u32 v = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o) incl += v;
                }
                u64 e = at + incl - c;
                while (free_bits) {
                    const u32 bit = __ffs(free_bits) - 1;
                    if (e < nnz) idx[e] = (I)(wi * 32 + bit + add);
                    ++e;
                    free_bits &= free_bits - 1;
                }
                at += __shfl_sync(0xffffffffu, incl, 31);
            }
            __syncwarp();
            for (u32 i = lane; i < nw; i += 32) seen[i] = 0;
        } else {
            // Clear the words of the targets written.
            for (u64 e = s0 + lane; e < s0 + count && e < nnz; e += 32) {
                const u32 o = (u32)((u64)idx[e] - add);
                seen[o >> 5] = 0;
            }
        }
        __syncwarp();
    }
}

extern "C" __global__ void __launch_bounds__(32 * KCAP_GEN_WARPS)
    explicit_gen_u32(u64 key, u64 n_tgt, u32 nb, u64 item0, u64 nitems, const u64* seg, const u32* pos,
                     u32 complement, u32* idx, u64 nnz) {
    gen_items<u32>(key, n_tgt, nb, item0, nitems, seg, pos, complement, idx, nnz);
}

extern "C" __global__ void __launch_bounds__(32 * KCAP_GEN_WARPS)
    explicit_gen_u16(u64 key, u64 n_tgt, u32 nb, u64 item0, u64 nitems, const u64* seg, const u32* pos,
                     u32 complement, u16* idx, u64 nnz) {
    gen_items<u16>(key, n_tgt, nb, item0, nitems, seg, pos, complement, idx, nnz);
}

// Bitmap rows from drawn targets: the u32 targets of items [0, nitems) of
// a batch (seg: its nitems + 1 offsets, idx from seg[0]) set their bits in
// the batch's rows (row of item i: i / nb), nbits words in all.
extern "C" __global__ void explicit_set_bits(const u64* __restrict__ seg, const u32* __restrict__ idx, u32 nb,
                                             u64 nitems, u64 nidx, u64 words, u64* __restrict__ bits, u64 nbits) {
    const u32 lane = threadIdx.x & 31u;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 it = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; it < nitems; it += nwarps) {
        const u64 e1 = min(seg[it + 1] - seg[0], nidx);
        for (u64 e = seg[it] - seg[0] + lane; e < e1; e += 32) {
            const u32 j = idx[e];
            const u64 wi = (it / nb) * words + (j >> 6);
            if (wi < nbits) atomicOr((unsigned long long*)&bits[wi], 1ULL << (j & 63u));
        }
    }
}

extern "C" __global__ void explicit_fill_u32(u32* x, u64 n, u32 v) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) x[i] = v;
}

extern "C" __global__ void explicit_fill_u16(u16* x, u64 n, u32 v) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        x[i] = (u16)v;
}

// ---- weight codecs (crates/kcap/src/format/weights.rs) -----------------------

struct WF32 {
    typedef float T;
    static __device__ __forceinline__ float get(const float* w, u64 e, const float*) { return w[e]; }
};
struct WF16 {
    typedef u16 T;
    static __device__ __forceinline__ float get(const u16* w, u64 e, const float*) {
        return __half2float(__ushort_as_half(w[e]));
    }
};
struct WBF16 {
    typedef u16 T;
    static __device__ __forceinline__ float get(const u16* w, u64 e, const float*) {
        return __uint_as_float((u32)w[e] << 16);
    }
};
struct WLOG {
    typedef unsigned char T;
    static __device__ __forceinline__ float get(const unsigned char* w, u64 e, const float* table) {
        return table[w[e]];
    }
};

// half::bf16::from_f32: NaN stays quiet NaN, else round to nearest even.
__device__ __forceinline__ u16 kcap_bf16_from_f32(float f) {
    const u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x0040u);
    const u32 rb = 0x8000u;
    if ((x & rb) != 0 && (x & (3u * rb - 1u)) != 0) return (u16)((x >> 16) + 1u);
    return (u16)(x >> 16);
}

__device__ __forceinline__ float kcap_f16_to_f32(u16 h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float kcap_bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }

// weights::round_half: x rounded into a 16-bit float, nearest even or
// stochastically between its two neighbours with `bits`.
template <bool BF>
__device__ __forceinline__ u16 kcap_round_half(float x, bool stochastic, u64 bits) {
    const u16 c = BF ? kcap_bf16_from_f32(x) : __half_as_ushort(__float2half_rn(x));
    if (!stochastic) return c;
    const float cv = BF ? kcap_bf16_to_f32(c) : kcap_f16_to_f32(c);
    if (cv == x || !isfinite(cv)) return c;
    u16 lo, hi;
    if (cv < x) {
        lo = c;
        hi = (u16)(c + 1);
    } else {
        lo = (u16)(c - 1);
        hi = c;
    }
    const float l = BF ? kcap_bf16_to_f32(lo) : kcap_f16_to_f32(lo);
    const float h = BF ? kcap_bf16_to_f32(hi) : kcap_f16_to_f32(hi);
    const float u = __fmul_rn((float)(bits >> 40), 5.9604644775390625e-8f);  // 2^-24
    return u < __fdiv_rn(__fsub_rn(x, l), __fsub_rn(h, l)) ? hi : lo;
}

// ---- accumulation ----------------------------------------------------------------

// Stored weight 1 (bit weights; the side table adds the learned part).
struct WBIT {
    typedef float T;
    static __device__ __forceinline__ float get(const float*, u64, const float*) { return 1.0f; }
};

// One CTA per tile of KCAP_TILE targets, accumulating in shared memory:
// f32 (the running inputs) or the host's fixed-point sum.
template <bool FIXED>
struct Tile {
    float* accf;
    i64* acci;
    u64 lo;
    u32 width;

    __device__ void load(const float* inputs) {
        for (u32 t = threadIdx.x; t < width; t += blockDim.x) {
            if (FIXED) acci[t] = 0;
            else accf[t] = inputs[lo + t];
        }
        __syncthreads();
    }

    // inputs[lo + t] += v, as the host adds it (round(v * 2^24) with
    // saturation for the fixed-point accumulator).
    __device__ __forceinline__ void add(u32 t, float v) {
        if (FIXED) {
            const i64 q = __float2ll_rz(roundf(__fmul_rn(v, 16777216.0f)));
            const i64 a = acci[t];
            const i64 s = (i64)((u64)a + (u64)q);
            acci[t] = (q > 0 && s < a) ? 0x7fffffffffffffffLL : ((q < 0 && s > a) ? (i64)0x8000000000000000ULL : s);
        } else {
            accf[t] = __fadd_rn(accf[t], v);
        }
    }

    // Firing row f's side-table entries (see the top of the file), after
    // its synapses (`lead`: a barrier first). Uniform over the CTA.
    __device__ void side_row(const u64* __restrict__ side, u64 nside, u32 nfiring, u32 f, bool lead) {
        const u64 ne = nside - ((u64)nfiring + 1);
        const u64 c0 = min(side[f], ne), c1 = min(side[f + 1], ne);
        if (c1 <= c0) return;
        if (lead) __syncthreads();
        const u64* ents = side + nfiring + 1;
        for (u64 c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
            const u64 e = ents[c];
            const u64 t = (e >> 32) - lo;
            if (t < width) add((u32)t, __uint_as_float((u32)e));
        }
        __syncthreads();
    }

    __device__ void store(float* inputs) {
        __syncthreads();
        for (u32 t = threadIdx.x; t < width; t += blockDim.x) {
            if (FIXED) {
                const double d = __dmul_rn(__ll2double_rn(acci[t]), 5.9604644775390625e-8);  // 2^-24
                inputs[lo + t] = __fadd_rn(inputs[lo + t], __double2float_rn(d));
            } else {
                inputs[lo + t] = accf[t];
            }
        }
    }
};

// inputs[j] += the weights of the firing rows' synapses onto j, rows in
// firing order (and each row's side entries after it when has_side). CTA
// (tile) covers targets [b*65536 + t*TILE, +TILE) of block
// b = blockIdx.x / tiles_per_block. FIXED: the host's fixed-point
// accumulator (round(w * 2^24) summed with saturation, then added once).
template <typename W, typename I, bool FIXED>
__device__ void acc_rows(const u64* __restrict__ seg, u32 nb, u64 n_src, u64 n_tgt, const u32* __restrict__ firing,
                         u32 nfiring, const I* __restrict__ idx, const typename W::T* __restrict__ w,
                         const float* __restrict__ table, u64 nnz, const u64* __restrict__ side, u64 nside,
                         u32 has_side, float* __restrict__ inputs) {
    __shared__ float accf[FIXED ? 1 : KCAP_TILE];
    __shared__ i64 acci[FIXED ? KCAP_TILE : 1];
    const u32 tiles = KCAP_BLOCK_W / KCAP_TILE;
    const u64 b = blockIdx.x / tiles;
    const u64 lo = b * KCAP_BLOCK_W + (u64)(blockIdx.x % tiles) * KCAP_TILE;
    if (b >= nb || lo >= n_tgt) return;
    Tile<FIXED> tile{accf, acci, lo, (u32)min((u64)KCAP_TILE, n_tgt - lo)};
    tile.load(inputs);
    const u64 add = sizeof(I) == 4 ? 0 : b * KCAP_BLOCK_W;
    for (u32 f = 0; f < nfiring; ++f) {
        const u64 r = firing[f];
        if (r < n_src) {
            const u64 e0 = seg[r * nb + b], e1 = min(seg[r * nb + b + 1], nnz);
            for (u64 e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
                const u64 t = (u64)idx[e] + add - lo;
                if (t < tile.width) tile.add((u32)t, W::get(w, e, table));
            }
        }
        // Rows touch each target at most once; the barrier orders rows.
        __syncthreads();
        if (has_side) tile.side_row(side, nside, nfiring, f, false);
    }
    tile.store(inputs);
}

#define KCAP_ACC(NAME, W, I, FIXED)                                                                          \
    extern "C" __global__ void NAME(const u64* seg, u32 nb, u64 n_src, u64 n_tgt, const u32* firing,       \
                                    u32 nfiring, const I* idx, const W::T* w, const float* table, u64 nnz, \
                                    const u64* side, u64 nside, u32 has_side, float* inputs) {             \
        acc_rows<W, I, FIXED>(seg, nb, n_src, n_tgt, firing, nfiring, idx, w, table, nnz, side, nside,     \
                              has_side, inputs);                                                           \
    }

KCAP_ACC(explicit_acc_f32_u32_f32, WF32, u32, false)
KCAP_ACC(explicit_acc_f32_u16_f32, WF32, u16, false)
KCAP_ACC(explicit_acc_f16_u32_f32, WF16, u32, false)
KCAP_ACC(explicit_acc_f16_u16_f32, WF16, u16, false)
KCAP_ACC(explicit_acc_bf16_u32_f32, WBF16, u32, false)
KCAP_ACC(explicit_acc_bf16_u16_f32, WBF16, u16, false)
KCAP_ACC(explicit_acc_log_u32_f32, WLOG, u32, false)
KCAP_ACC(explicit_acc_log_u16_f32, WLOG, u16, false)
KCAP_ACC(explicit_acc_bit_u32_f32, WBIT, u32, false)
KCAP_ACC(explicit_acc_bit_u16_f32, WBIT, u16, false)
KCAP_ACC(explicit_acc_f32_u32_fixed, WF32, u32, true)
KCAP_ACC(explicit_acc_f32_u16_fixed, WF32, u16, true)
KCAP_ACC(explicit_acc_f16_u32_fixed, WF16, u32, true)
KCAP_ACC(explicit_acc_f16_u16_fixed, WF16, u16, true)
KCAP_ACC(explicit_acc_bf16_u32_fixed, WBF16, u32, true)
KCAP_ACC(explicit_acc_bf16_u16_fixed, WBF16, u16, true)
KCAP_ACC(explicit_acc_log_u32_fixed, WLOG, u32, true)
KCAP_ACC(explicit_acc_log_u16_fixed, WLOG, u16, true)
KCAP_ACC(explicit_acc_bit_u32_fixed, WBIT, u32, true)
KCAP_ACC(explicit_acc_bit_u16_fixed, WBIT, u16, true)

// Bitmap rows: CTA blockIdx.x covers targets [x*TILE, +TILE); launched with
// TILE/8 threads, thread t owning targets 8t..8t+7 of the tile (one byte of
// a row's words), so a thread adds its targets' unit weights in firing order
// without barriers; side entries go in after their row as in acc_rows.
template <bool FIXED>
__device__ void acc_bitmap(const u64* __restrict__ bits, u64 words, u64 n_src, u64 n_tgt,
                           const u32* __restrict__ firing, u32 nfiring, const u64* __restrict__ side, u64 nside,
                           u32 has_side, float* __restrict__ inputs) {
    __shared__ float accf[FIXED ? 1 : KCAP_TILE];
    __shared__ i64 acci[FIXED ? KCAP_TILE : 1];
    const u64 lo = (u64)blockIdx.x * KCAP_TILE;
    if (lo >= n_tgt) return;
    Tile<FIXED> tile{accf, acci, lo, (u32)min((u64)KCAP_TILE, n_tgt - lo)};
    tile.load(inputs);
    const u64 wi = (lo >> 6) + (threadIdx.x >> 3);
    const u32 shift = (threadIdx.x & 7u) * 8u, t0 = threadIdx.x * 8u;
    const bool mine = wi < words && t0 < tile.width;
    auto byte_of = [&](u32 f) -> u32 {
        const u64 r = f < nfiring ? firing[f] : n_src;
        return (mine && r < n_src) ? (u32)(bits[r * words + wi] >> shift) & 0xffu : 0u;
    };
    u32 next = byte_of(0);
    for (u32 f = 0; f < nfiring; ++f) {
        u32 m = next;
        next = byte_of(f + 1);  // the next row's load overlaps this row's adds
        while (m) {
            const u32 t = t0 + (u32)(__ffs(m) - 1);
            if (t < tile.width) tile.add(t, 1.0f);
            m &= m - 1u;
        }
        if (has_side) tile.side_row(side, nside, nfiring, f, true);
    }
    tile.store(inputs);
}

#define KCAP_ACC_BITMAP(NAME, FIXED)                                                                         \
    extern "C" __global__ void __launch_bounds__(KCAP_TILE / 8)                                            \
        NAME(const u64* bits, u64 words, u64 n_src, u64 n_tgt, const u32* firing, u32 nfiring,              \
             const u64* side, u64 nside, u32 has_side, float* inputs) {                                    \
        acc_bitmap<FIXED>(bits, words, n_src, n_tgt, firing, nfiring, side, nside, has_side, inputs);      \
    }

KCAP_ACC_BITMAP(explicit_acc_bitmap_f32, false)
KCAP_ACC_BITMAP(explicit_acc_bitmap_fixed, true)

// ---- Hebbian update ------------------------------------------------------------

// Weight kinds: 0 f32, 1 f16, 2 bf16, 3 log-u8.
// One warp per firing row: every synapse of the row onto a winner
// (is_winner bit set) is potentiated; the n-th such synapse in storage order
// gets the random bits word(derive(sr_key, row), n).
template <int KIND, typename I>
__device__ void hebb_rows(const u64* __restrict__ seg, u32 nb, u64 n_src, u64 n_tgt, const u32* __restrict__ firing,
                          u32 nfiring, const I* __restrict__ idx, void* wv, u64 nnz,
                          const u64* __restrict__ is_winner, u64 nwords, float mult, float cap, u32 stochastic,
                          u64 sr_key, u32 max_code, u32 has_cap) {
    const u32 lane = threadIdx.x & 31u;
    const u32 lt = (1u << lane) - 1u;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 f = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; f < nfiring; f += nwarps) {
        const u64 r = firing[f];
        if (r >= n_src) continue;
        const u64 rk = kcap_derive(sr_key, &r, 1);
        u64 n = 0;
        for (u64 b = 0; b < nb; ++b) {
            const u64 add = sizeof(I) == 4 ? 0 : b * KCAP_BLOCK_W;
            const u64 e0 = seg[r * nb + b], e1 = min(seg[r * nb + b + 1], nnz);
            for (u64 base = e0; base < e1; base += 32) {
                const u64 e = base + lane;
                bool hit = false;
                if (e < e1) {
                    const u64 j = (u64)idx[e] + add;
                    hit = j < n_tgt && (j >> 6) < nwords && ((is_winner[j >> 6] >> (j & 63)) & 1ULL);
                }
                const u32 m = __ballot_sync(0xffffffffu, hit);
                if (hit) {
                    const u64 bits = kcap_word(rk, n + __popc(m & lt));
                    if (KIND == 0) {
                        float* w = (float*)wv;
                        w[e] = fminf(__fmul_rn(w[e], mult), cap);
                    } else if (KIND == 1 || KIND == 2) {
                        u16* w = (u16*)wv;
                        const float x0 = KIND == 1 ? kcap_f16_to_f32(w[e]) : kcap_bf16_to_f32(w[e]);
                        const float x = fminf(__fmul_rn(x0, mult), cap);
                        w[e] = kcap_round_half<KIND == 2>(x, stochastic != 0, bits);
                    } else {
                        unsigned char* w = (unsigned char*)wv;
                        const u32 c = w[e];
                        w[e] = (unsigned char)(c == 255u ? c : (c < max_code ? c + 1u : (has_cap ? 255u : c)));
                    }
                }
                n += __popc(m);
            }
        }
    }
}

#define KCAP_HEBB(NAME, KIND, I)                                                                                 \
    extern "C" __global__ void NAME(const u64* seg, u32 nb, u64 n_src, u64 n_tgt, const u32* firing, u32 nfiring, \
                                    const I* idx, void* w, u64 nnz, const u64* is_winner, u64 nwords, float mult,  \
                                    float cap, u32 stochastic, u64 sr_key, u32 max_code, u32 has_cap) {            \
        hebb_rows<KIND, I>(seg, nb, n_src, n_tgt, firing, nfiring, idx, w, nnz, is_winner, nwords, mult, cap,      \
                           stochastic, sr_key, max_code, has_cap);                                                 \
    }

KCAP_HEBB(explicit_hebb_f32_u32, 0, u32)
KCAP_HEBB(explicit_hebb_f32_u16, 0, u16)
KCAP_HEBB(explicit_hebb_f16_u32, 1, u32)
KCAP_HEBB(explicit_hebb_f16_u16, 1, u16)
KCAP_HEBB(explicit_hebb_bf16_u32, 2, u32)
KCAP_HEBB(explicit_hebb_bf16_u16, 2, u16)
KCAP_HEBB(explicit_hebb_log_u32, 3, u32)
KCAP_HEBB(explicit_hebb_log_u16, 3, u16)

// ---- Hebbian update of bit weights: the synapses onto winners ---------------

// Appends the m set bits' pairs (row << 32 | target) at the warp's place in
// out (count: pairs so far; a pair past cap is counted but not written, and
// the launcher runs again with room for all). Called by the whole warp.
__device__ __forceinline__ void hits_emit(u64 r, u64 j, bool hit, u64* __restrict__ out, u64 cap,
                                          unsigned long long* count) {
    const u32 lane = threadIdx.x & 31u;
    const u32 m = __ballot_sync(0xffffffffu, hit);
    if (!m) return;
    unsigned long long at = 0;
    if (lane == 0) at = atomicAdd(count, (unsigned long long)__popc(m));
    at = __shfl_sync(0xffffffffu, at, 0);
    if (hit) {
        const u64 p = at + __popc(m & ((1u << lane) - 1u));
        if (p < cap) out[p] = (r << 32) | j;
    }
}

// CSR rows: one warp per firing row.
template <typename I>
__device__ void hits_rows(const u64* __restrict__ seg, u32 nb, u64 n_src, u64 n_tgt, const u32* __restrict__ firing,
                          u32 nfiring, const I* __restrict__ idx, u64 nnz, const u64* __restrict__ is_winner,
                          u64 nwords, u64* __restrict__ out, u64 cap, unsigned long long* count) {
    const u32 lane = threadIdx.x & 31u;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 f = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; f < nfiring; f += nwarps) {
        const u64 r = firing[f];
        if (r >= n_src) continue;
        for (u64 b = 0; b < nb; ++b) {
            const u64 add = sizeof(I) == 4 ? 0 : b * KCAP_BLOCK_W;
            const u64 e0 = seg[r * nb + b], e1 = min(seg[r * nb + b + 1], nnz);
            for (u64 base = e0; base < e1; base += 32) {
                const u64 e = base + lane;
                u64 j = 0;
                bool hit = false;
                if (e < e1) {
                    j = (u64)idx[e] + add;
                    hit = j < n_tgt && (j >> 6) < nwords && ((is_winner[j >> 6] >> (j & 63)) & 1ULL);
                }
                hits_emit(r, j, hit, out, cap, count);
            }
        }
    }
}

#define KCAP_HITS(NAME, I)                                                                                      \
    extern "C" __global__ void NAME(const u64* seg, u32 nb, u64 n_src, u64 n_tgt, const u32* firing, u32 nfiring, \
                                    const I* idx, u64 nnz, const u64* is_winner, u64 nwords, u64* out, u64 cap,    \
                                    unsigned long long* count) {                                                 \
        hits_rows<I>(seg, nb, n_src, n_tgt, firing, nfiring, idx, nnz, is_winner, nwords, out, cap, count);      \
    }

KCAP_HITS(explicit_hits_u32, u32)
KCAP_HITS(explicit_hits_u16, u16)

// Bitmap rows: one warp per 32 words of a firing row (item = f * words + w).
extern "C" __global__ void explicit_hits_bitmap(const u64* __restrict__ bits, u64 words, u64 n_src,
                                                const u32* __restrict__ firing, u32 nfiring,
                                                const u64* __restrict__ is_winner, u64 nwords, u64* __restrict__ out,
                                                u64 cap, unsigned long long* count) {
    const u64 items = (u64)nfiring * words;
    const u64 nthreads = (u64)gridDim.x * blockDim.x;
    // Whole warps step together (hits_emit is a warp operation).
    const u64 end = (items + 31) / 32 * 32;
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < end; g += nthreads) {
        u64 m = 0, r = 0, w = 0;
        if (g < items) {
            const u64 f = g / words;
            w = g % words;
            r = firing[f];
            if (r < n_src && w < nwords) m = bits[r * words + w] & is_winner[w];
        }
        // Up to 64 pairs per word: emit them one bit position at a time.
        while (__any_sync(0xffffffffu, m != 0)) {
            const bool hit = m != 0;
            const u64 j = hit ? (w << 6) | (u64)(__ffsll((long long)m) - 1) : 0;
            hits_emit(r, j, hit, out, cap, count);
            if (hit) m &= m - 1;
        }
    }
}
