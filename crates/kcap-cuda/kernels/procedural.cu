// procedural.cu — the procedural engine's step on the device: regenerate the
// events of every firing row into each target block, count them on chip,
// add the learned corrections, write the block's inputs; and find the
// synapses onto the winners for the Hebbian update. Launched by
// src/ops/procedural.rs; the graph recipe is docs/procedural.md's, bit for
// bit (crates/kcap/src/engine/procedural/rows.rs).
//
// One thread block owns one target block (2^16 ids) and keeps its counts in
// shared memory: two 16-bit counters per 32-bit word, incremented with a
// 32-bit shared atomic (the launcher guarantees fewer than 2^16 firing rows,
// so a half never carries into the other). Threads take firing rows
// round-robin and walk each row's stream in the block; when a row ends the
// thread moves on to its next row inside the same loop, so a warp's lanes
// stay busy whatever the row lengths. The optional skip table (dynamic
// shared memory after the counters) is kcap's SkipTable rebuilt for a
// given number of index bits: it gives the skip without a logarithm
// wherever the skip is constant over the table bin, and is exact.
#include "common.cuh"

#define KCAP_PBLOCK_BITS 16
#define KCAP_PBLOCK (1u << KCAP_PBLOCK_BITS)
#define KCAP_SLOW 0xFFFFu

// Launch arguments shared by the kernels of this module (ProcArgs in
// src/ops/procedural.rs; the layout is checked by static_assert below).
struct ProcArgs {
    const u64* row_keys;    // row_key of every firing row, slot order
    const u32* fiber_end;   // end slot of each fiber (nf entries)
    const double* scale;    // c = 1/ln(1-p) of each fiber
    const u32* plastic;     // 1 when the fiber is plastic (hits kernel)
    const u16* table;       // skip table (2^tbits entries) or null
    u64 n;                  // target area size
    u64 block0;             // first target block of this launch
    u32 nf;                 // fibers
    u32 slots;              // firing rows
    u32 tbits;              // table index bits (0: no table)
    u32 nblocks;            // target blocks of this launch
    // learned corrections, grouped by block (see kcap DeviceStep)
    const u64* corr_blocks;
    const u32* corr_off;
    const u32* corr_local;
    const float* corr_delta;
    u32 ncorr;              // entries of corr_blocks
    u32 pad0;
    float* values;          // inputs of the launch's ids, from block0 * 2^16
    u64* stats;             // [0] += received, [1] += events
    // hits kernel: blocks holding winners and their local ids
    const u64* wblocks;
    const u32* woff;
    const u32* wlocal;
    u64* hits;              // (winner id << 16 | slot), hits_cap entries
    u32 hits_cap;
    u32 pad1;
    u32* hits_count;        // [0] += found (may exceed hits_cap: retry)
    double log2_err;        // bound on the fast log2's error (0: no fast path)
    // dense per-target counts kept between steps (u16, ids from 0, whole blocks)
    const u16* base;        // proc_count: start each block's counters from these (null: from 0)
    u16* counts;            // proc_count: store the counters here instead of inputs (null: inputs);
                            // proc_finalize: the counts to turn into inputs
};
static_assert(sizeof(ProcArgs) == 200, "ProcArgs layout");

// At most this many fibers per launch (their parameters live in shared memory).
#define KCAP_MAX_FIBERS 32

// Per-fiber parameters, copied to shared memory at kernel start.
struct FiberSmem {
    u32 end[KCAP_MAX_FIBERS];
    u32 plastic[KCAP_MAX_FIBERS];
    double scale[KCAP_MAX_FIBERS];
};

__device__ __forceinline__ void kcap_load_fibers(const ProcArgs& a, FiberSmem& fs) {
    for (u32 f = threadIdx.x; f < a.nf && f < KCAP_MAX_FIBERS; f += blockDim.x) {
        fs.end[f] = a.fiber_end[f];
        fs.plastic[f] = a.plastic[f];
        fs.scale[f] = a.scale[f];
    }
}

// Kernel prologue: fiber parameters and the skip table (if any) into shared
// memory, `nzero` words of `zero` cleared, then a barrier.
__device__ __forceinline__ void kcap_stage(const ProcArgs& a, FiberSmem& fs, u32* zero, u32 nzero, u16* tab) {
    kcap_load_fibers(a, fs);
    for (u32 i = threadIdx.x; i < nzero; i += blockDim.x) zero[i] = 0;
    if (tab) {
        const u32 nt = 1u << a.tbits;
        for (u32 i = threadIdx.x; i < nt / 2; i += blockDim.x) ((u32*)tab)[i] = ((const u32*)a.table)[i];
    }
    __syncthreads();
}

__device__ __forceinline__ u32 kcap_fiber_of(const ProcArgs& a, const FiberSmem& fs, u32 slot) {
    u32 f = 0;
    while (f + 1 < a.nf && slot >= fs.end[f]) ++f;
    return f;
}

// The fast skip estimate: log2 of the draw from the hardware's approximate
// log2 (MUFU) on its top 24 significant bits, with a proven error bound
// `ceps` (in skip units; see ops/procedural.rs: the bound is measured
// exhaustively on the device at start-up). Returns 1 with the exact skip
// in s when floor(g ± eps) agree and g + eps < rem, 0 when the walk surely
// ends (g − eps >= rem), −1 when undecided (take the exact path). Draws
// below 2^-21 are always undecided.
__device__ __forceinline__ int kcap_skip_fast(u64 w, double cl2, double ceps, u32 rem, u32& s) {
    const u32 lz = __clzll(w);
    if (lz > 20) return -1;
    const u32 m = (u32)((w << lz) >> 40);                       // 1.xxx: 24 significant bits
    const float mf = __uint_as_float(0x3f800000u | (m & 0x7fffffu));  // in [1, 2), exact
    const double l2 = (double)__log2f(mf) - (double)(lz + 1);   // ~ log2(w / 2^64) <= 0
    const double g = l2 * cl2;                                   // ~ the skip, >= 0
    const double eps = ceps + g * 1e-9;
    const double r = (double)rem;
    if (g - eps >= r) return 0;
    if (g + eps >= r) return -1;
    const double f0 = floor(g - eps);
    if (f0 < 0.0 || f0 != floor(g + eps)) return -1;
    s = (u32)f0;
    return 1;
}

// The skip of draw w: from the table where it resolves it, else the fast
// estimate where it is decided, else the recipe's logarithm. Returns false
// when the walk ends (skip >= rem).
__device__ __forceinline__ bool kcap_skip(const u16* tab, u32 sh, double c, double cl2, double ceps,
                                          u64 w, u32 rem, u32& s) {
    if (tab != nullptr) {
        const u32 e = tab[w >> sh];
        if (e != KCAP_SLOW) {
            s = e;
            return e < rem;
        }
    }
    if (ceps > 0.0) {
        const int r = kcap_skip_fast(w, cl2, ceps, rem, s);
        if (r >= 0) return r == 1;
    }
    const double g = __dmul_rn(kcap_ln_fast(kcap_unit_open(w)), c);
    if (g >= (double)rem) return false;
    s = (u32)(u64)g;
    return true;
}

// Walks, for every firing row r with accept(r) (thread-strided), the targets
// of block b below len in increasing order, calling emit(local, slot). The
// key and scale of a thread's next row are loaded while it walks the
// current one, so switching rows does not wait on memory.
template <typename Accept, typename Emit>
__device__ __forceinline__ void kcap_walk_rows(const ProcArgs& a, const FiberSmem& fs, const u16* tab,
                                               u64 b, u32 len, Accept accept, Emit emit) {
    const u32 sh = 64 - a.tbits;
    const double LN2 = 0.6931471805599453;
    auto next_slot = [&](u32 s) {
        while (s < a.slots && !accept(s)) s += blockDim.x;
        return s;
    };
    u32 slot = next_slot(threadIdx.x);
    if (slot >= a.slots || len == 0) return;
    u64 key = a.row_keys[slot];
    double c = fs.scale[kcap_fiber_of(a, fs, slot)];
    u32 nslot = next_slot(slot + blockDim.x);
    u64 nkey = 0;
    double nc = 0.0;
    if (nslot < a.slots) {
        nkey = a.row_keys[nslot];
        nc = fs.scale[kcap_fiber_of(a, fs, nslot)];
    }
    // The fast path's error bound in skip units: log2_err * ln2 * |c| (c < 0).
    double cl2 = c * LN2, ceps = -cl2 * a.log2_err;
    u64 ctr = kcap_word(key, b);  // the block key; word(K, t) = mix64(K + t*GOLDEN)
    u32 pos = 0;
    for (;;) {
        const u64 w = kcap_mix64(ctr);
        ctr += KCAP_GOLDEN;
        u32 s;
        bool more = kcap_skip(tab, sh, c, cl2, ceps, w, len - pos, s);
        if (more) {
            pos += s;
            emit(pos, slot);
            pos += 1;
            more = pos < len;
        }
        if (!more) {
            slot = nslot;
            if (slot >= a.slots) return;
            c = nc;
            cl2 = c * LN2;
            ceps = -cl2 * a.log2_err;
            ctr = kcap_word(nkey, b);
            pos = 0;
            nslot = next_slot(slot + blockDim.x);
            if (nslot < a.slots) {
                nkey = a.row_keys[nslot];
                nc = fs.scale[kcap_fiber_of(a, fs, nslot)];
            }
        }
    }
}

__device__ __forceinline__ u32 kcap_block_len(u64 n, u64 b) {
    const u64 rest = n - b * KCAP_PBLOCK;
    return rest < KCAP_PBLOCK ? (u32)rest : KCAP_PBLOCK;
}

// Sums a per-thread value over the thread block and adds it to *dst once.
__device__ __forceinline__ void kcap_block_add(u64 v, u64* dst) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0 && v != 0) atomicAdd((unsigned long long*)dst, (unsigned long long)v);
}

// Turns the counts of target block b (count(l) for local id l < len) into
// inputs: count + the block's corrections, summed in f64 in the given order
// and rounded to f32; 0 for ids without input. Writes out[0..len) and adds
// received / events to a.stats.
template <typename Count>
__device__ __forceinline__ void kcap_inputs(const ProcArgs& a, u64 b, u32 len, float* out, Count count) {
    // This block's corrections: entries [c0, c1) sorted by local id.
    u32 c0 = 0, c1 = 0;
    {
        u32 lo = 0, hi = a.ncorr;
        while (lo < hi) {
            const u32 mid = (lo + hi) / 2;
            if (a.corr_blocks[mid] < b) lo = mid + 1; else hi = mid;
        }
        if (lo < a.ncorr && a.corr_blocks[lo] == b) {
            c0 = a.corr_off[lo];
            c1 = a.corr_off[lo + 1];
        }
    }
    u64 received = 0, events = 0;
    for (u32 l = threadIdx.x; l < len; l += blockDim.x) {
        const u32 c = count(l);
        float v = 0.0f;
        if (c != 0) {
            received += 1;
            events += c;
            double d = (double)c;
            if (c1 > c0) {
                u32 lo = c0, hi = c1;
                while (lo < hi) {
                    const u32 mid = (lo + hi) / 2;
                    if (a.corr_local[mid] < l) lo = mid + 1; else hi = mid;
                }
                for (; lo < c1 && a.corr_local[lo] == l; ++lo) d = __dadd_rn(d, (double)a.corr_delta[lo]);
            }
            v = __double2float_rn(d);
        }
        out[l] = v;
    }
    kcap_block_add(received, a.stats);
    kcap_block_add(events, a.stats + 1);
}

// One thread block per target block: counts (from 0, or from a.base), then
// either the inputs (corrections added) or, when a.counts is set, the raw
// counts stored for a later proc_finalize or as the next step's base.
// Dynamic shared memory: 2^15 u32 counter words, then the table.
extern "C" __global__ void __launch_bounds__(1024) proc_count(const ProcArgs a) {
    extern __shared__ u32 smem[];
    __shared__ FiberSmem fs;
    u32* cnt = smem;
    u16* tab = a.tbits ? (u16*)(smem + KCAP_PBLOCK / 2) : nullptr;
    const u64 b = a.block0 + blockIdx.x;
    const u32 len = kcap_block_len(a.n, b);
    if (a.base) {
        // Two u16 counters per u32 word, low half first: the layout of cnt.
        const u32* src = (const u32*)(a.base + b * KCAP_PBLOCK);
        for (u32 i = threadIdx.x; i < KCAP_PBLOCK / 2; i += blockDim.x) cnt[i] = src[i];
    }
    kcap_stage(a, fs, cnt, a.base ? 0 : KCAP_PBLOCK / 2, tab);
    kcap_walk_rows(a, fs, tab, b, len, [](u32) { return true; },
                   [&](u32 l, u32) { atomicAdd(&cnt[l >> 1], 1u << ((l & 1) << 4)); });
    __syncthreads();
    if (a.counts) {
        u32* dst = (u32*)(a.counts + b * KCAP_PBLOCK);
        for (u32 i = threadIdx.x; i < KCAP_PBLOCK / 2; i += blockDim.x) dst[i] = cnt[i];
        return;
    }
    kcap_inputs(a, b, len, a.values + (u64)blockIdx.x * KCAP_PBLOCK,
                [&](u32 l) { return (cnt[l >> 1] >> ((l & 1) << 4)) & 0xFFFFu; });
}

// One thread block per target block of the launch: the inputs from the
// stored counts a.counts (see proc_count) and the corrections.
extern "C" __global__ void __launch_bounds__(1024) proc_finalize(const ProcArgs a) {
    const u64 b = a.block0 + blockIdx.x;
    const u16* c = a.counts + b * KCAP_PBLOCK;
    kcap_inputs(a, b, kcap_block_len(a.n, b), a.values + (u64)blockIdx.x * KCAP_PBLOCK,
                [&](u32 l) { return (u32)c[l]; });
}

// One thread block per target block holding winners (a.wblocks[blockIdx.x]):
// regenerates the rows of the plastic fibers up to the block's last winner
// and lists every (winner, slot) synapse. Dynamic shared memory: the
// winner bitmap (2^11 u32), then the table.
extern "C" __global__ void __launch_bounds__(1024) proc_hits(const ProcArgs a) {
    extern __shared__ u32 smem[];
    __shared__ FiberSmem fs;
    u32* marks = smem;
    u16* tab = a.tbits ? (u16*)(smem + KCAP_PBLOCK / 32) : nullptr;
    const u64 b = a.wblocks[blockIdx.x];
    const u32 w0 = a.woff[blockIdx.x], w1 = a.woff[blockIdx.x + 1];
    kcap_stage(a, fs, marks, KCAP_PBLOCK / 32, tab);
    for (u32 i = w0 + threadIdx.x; i < w1; i += blockDim.x) {
        const u32 l = a.wlocal[i];
        atomicOr(&marks[l >> 5], 1u << (l & 31));
    }
    __syncthreads();
    // Walking a shorter block yields exactly the prefix of its targets.
    const u32 upto = a.wlocal[w1 - 1] + 1;
    const u64 base = b * KCAP_PBLOCK;
    kcap_walk_rows(a, fs, tab, b, upto,
                   [&](u32 slot) { return fs.plastic[kcap_fiber_of(a, fs, slot)] != 0; },
                   [&](u32 l, u32 slot) {
                       if ((marks[l >> 5] >> (l & 31)) & 1u) {
                           const u32 i = atomicAdd(a.hits_count, 1u);
                           if (i < a.hits_cap) a.hits[i] = ((base + l) << 16) | slot;
                       }
                   });
}

// out[i] = values[ids[i]]
extern "C" __global__ void proc_gather(const float* values, const u32* ids, float* out, u32 k) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < k; i += gridDim.x * blockDim.x) out[i] = values[ids[i]];
}

// The largest |__log2f(x) - log2(x)| over every float x in [1, 2) (2^23
// values), as float bits in *out (atomicMax on the bits of a non-negative
// float orders like the value). Bounds the fast skip path (see above).
extern "C" __global__ void proc_log2_error(u32* out) {
    float worst = 0.0f;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < (1u << 23); i += gridDim.x * blockDim.x) {
        const float x = __uint_as_float(0x3f800000u | i);
        const double e = fabs((double)__log2f(x) - log2((double)x));
        worst = fmaxf(worst, (float)e * 1.001f);
    }
    atomicMax(out, __float_as_uint(worst));
}
