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
// so a half never carries into the other). Local id l counts in word
// l & 0x7FFF, low half for l < 2^15, high half above (kcap_cnt_*). Threads take firing rows
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
    u32 hits_part;          // proc_hits: 0 every item, 1 the marked ones only, 2 the others only
    u32* hits_count;        // [0] += found (may exceed hits_cap: retry)
    double log2_err;        // bound on the fast log2's error (0: no fast path)
    // dense per-target counts kept between steps (u16, ids from 0, whole blocks)
    const u16* base;        // proc_count: start each block's counters from these (null: from 0)
    u16* counts;            // proc_count: store the counters here instead of inputs (null: inputs);
                            // proc_corrected: the stored counts of the corrected ids
    // resume marks (see "Marks" below); seg_bits 0: none
    u32* marks;             // proc_count: written; proc_hits: of slots < mark_split
    const u32* marks1;      // proc_hits: of slots >= mark_split
    u32 mark_split;         // proc_hits: slots of `marks` (the rest are in marks1)
    u32 seg_bits;           // log2 of the segment width (marks every 2^seg_bits targets)
    // single-precision fast skip (kcap_skip_f32): error bounds, 0: not used
    float f32_abs;          // log2 units, absolute part
    float f32_rel;          // relative to the skip estimate
};
static_assert(sizeof(ProcArgs) == 232, "ProcArgs layout");

// At most this many fibers per launch (their parameters live in shared memory).
#define KCAP_MAX_FIBERS 32

// Per-fiber parameters, copied to shared memory at kernel start.
// cl2f and ea: the single-precision skip's scale and absolute bound (see
// kcap_skip_consts), for the lean walk.
struct FiberSmem {
    u32 end[KCAP_MAX_FIBERS];
    u32 plastic[KCAP_MAX_FIBERS];
    double scale[KCAP_MAX_FIBERS];
    float cl2f[KCAP_MAX_FIBERS];
    float ea[KCAP_MAX_FIBERS];
    u32 next_row;  // proc_count's lean walk: rows handed out so far beyond the first blockDim
};

struct KSkip;
__device__ __forceinline__ KSkip kcap_skip_consts(const ProcArgs& a, double c);

__device__ __forceinline__ void kcap_load_fibers(const ProcArgs& a, FiberSmem& fs);

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

// The shared counters of a target block: local id l in word l & 0x7FFF,
// half l >> 15 (a word holds ids l and l + 2^15). Fewer instructions per
// event than halves by parity: the word needs no shift, and any l gives a
// word in range, so an emit that adds 0 needs no select of the address.
__device__ __forceinline__ u32 kcap_cnt_word(u32 l) { return l & 0x7FFFu; }
// The increment of id l < 2^16: 1 or 0x10000.
__device__ __forceinline__ u32 kcap_cnt_inc(u32 l) { return 1u + (l >> 15) * 0xFFFFu; }
__device__ __forceinline__ u32 kcap_cnt_get(const u32* cnt, u32 l) {
    return (cnt[l & 0x7FFFu] >> ((l >> 15) << 4)) & 0xFFFFu;
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

// The hardware's approximate log2 (MUFU.LG2) without the denormal fix-up
// __log2f adds (every argument here is normal); the error bound is
// measured with this same instruction (proc_log2_error_f32).
__device__ __forceinline__ float kcap_lg2(float x) {
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// The same decision in single precision, for draws w >= 2^43: x = w rounded
// to a float, times 2^-64 (within a relative 2^-24 + 2^-33 of
// unit_open(w)); g = lg2(x) * cl2f, with the bound |g - skip(w)| <= ea +
// g * rel, where ea = |cl2| * (the absolute error of lg2 on [1/2, 1] + that
// of x) and rel covers lg2's error relative to |log2 x| on [2^-21, 1/2),
// the float roundings and the recipe's own error (measured and set by
// ops/procedural.rs). Every rounding that could shrink the interval is
// directed, so floor(g - eps) == floor(g + eps) proves the skip. Same
// returns as kcap_skip_fast.
__device__ __forceinline__ int kcap_skip_f32(u64 w, float cl2f, float ea, float rel, u32 rem, u32& s) {
    if ((w >> 43) == 0) return -1;
    const float x = __ull2float_rn(w) * 5.421010862427522e-20f;  // * 2^-64, exact
    const float g = kcap_lg2(x) * cl2f;                               // >= 0
    const float eps = __fmaf_ru(g, rel, ea);
    // floor by adding 2^23 rounding down (exact for values in [0, 2^22]; a
    // negative lo gives fl < 0: undecided).
    const float lo = fminf(fmaxf(__fsub_rd(g, eps), -1.0f), 4194304.0f);
    const float up = fminf(__fadd_ru(g, eps), 4194304.0f);
    const int fl = (int)__float_as_uint(__fadd_rd(lo, 8388608.0f)) - 0x4B000000;
    const int fh = (int)__float_as_uint(__fadd_rd(up, 8388608.0f)) - 0x4B000000;
    if (fl >= (int)rem) return 0;
    if (fh >= (int)rem || fl != fh || fl < 0) return -1;
    s = (u32)fl;
    return 1;
}

// Per-row constants of the skip: c, and the fast paths' scale and bounds.
struct KSkip {
    double c, cl2, ceps;  // c = 1/ln(1-p), cl2 = c*ln2, ceps = f64 path bound (0: off)
    float cl2f, ea;       // f32 path: cl2 as float, absolute bound (0: off)
};

__device__ __forceinline__ KSkip kcap_skip_consts(const ProcArgs& a, double c) {
    KSkip k;
    k.c = c;
    k.cl2 = c * 0.6931471805599453;
    k.ceps = -k.cl2 * a.log2_err;
    k.cl2f = (float)k.cl2;
    k.ea = a.f32_abs > 0.0f ? __double2float_ru(-k.cl2 * (double)a.f32_abs) : 0.0f;
    return k;
}

__device__ __forceinline__ void kcap_load_fibers(const ProcArgs& a, FiberSmem& fs) {
    if (threadIdx.x == 0) fs.next_row = 0;
    for (u32 f = threadIdx.x; f < a.nf && f < KCAP_MAX_FIBERS; f += blockDim.x) {
        fs.end[f] = a.fiber_end[f];
        fs.plastic[f] = a.plastic[f];
        fs.scale[f] = a.scale[f];
        const KSkip k = kcap_skip_consts(a, a.scale[f]);
        fs.cl2f[f] = k.cl2f;
        fs.ea[f] = k.ea;
    }
}

// How a kernel variant decides skips: KCAP_ANY (kcap_walk) checks at run
// time for the table, the single- and the double-precision estimates;
// KCAP_F32 (kcap_walk_lean) knows there is no table and that the
// single-precision bounds are set and every fiber has p < 1 (the
// launcher's choice), so the hot loop has no branch for the other paths.
// Both fall back to the recipe's logarithm.
#define KCAP_ANY 0
#define KCAP_F32 1

// The skip of draw w: from the table where it resolves it, else the fast
// estimate (single, else double precision) where it is decided, else the
// recipe's logarithm. Returns false when the walk ends (skip >= rem).
__device__ __forceinline__ bool kcap_skip(const ProcArgs& a, const u16* tab, u32 sh, const KSkip& k,
                                          u64 w, u32 rem, u32& s) {
    const double c = k.c;
    if (tab != nullptr) {
        const u32 e = tab[w >> sh];
        if (e != KCAP_SLOW) {
            s = e;
            return e < rem;
        }
    }
    if (k.ea > 0.0f) {
        const int r = kcap_skip_f32(w, k.cl2f, k.ea, a.f32_rel, rem, s);
        if (r >= 0) return r == 1;
    } else if (k.ceps > 0.0) {
        const int r = kcap_skip_fast(w, k.cl2, k.ceps, rem, s);
        if (r >= 0) return r == 1;
    }
    const double g = __dmul_rn(kcap_ln_fast(kcap_unit_open(w)), c);
    if (g >= (double)rem) return false;
    s = (u32)(u64)g;
    return true;
}

// One stretch of one row's stream inside a target block: the state of the
// walk before its next draw, and where it ends.
struct KWalk {
    u64 ctr;    // input of the next draw's mix64: K + t*GOLDEN (K = block key, t = draws so far)
    double c;   // scale of the row's fiber
    u32 slot;   // firing row
    u32 pos;    // the next draw's skip starts here (block-local)
    u32 end;    // the stretch ends at the first target >= end
    u32 klo;    // low word of K (marks: t from ctr)
};

// Walks stretches of rows (each thread takes them from next(KWalk&), false
// when it has none left), emitting every target in increasing order:
// emit(local, walk) (walk.ctr: the emitting draw's counter word); done(walk)
// when a stretch has ended. The thread's next stretch is fetched while it
// walks the current one, so switching does not wait on memory, and a thread
// whose stretch ends moves on inside the same loop.
template <typename Next, typename Emit, typename Done>
__device__ __forceinline__ void kcap_walk(const ProcArgs& a, const u16* tab, Next next, Emit emit, Done done) {
    const u32 sh = 64 - a.tbits;
    KWalk cur, nx;
    if (!next(cur)) return;
    bool have = next(nx);
    KSkip k = kcap_skip_consts(a, cur.c);
    for (;;) {
        const u64 w = kcap_mix64(cur.ctr);
        u32 s;
        bool more = kcap_skip(a, tab, sh, k, w, cur.end - cur.pos, s);
        if (more) {
            const u32 e = cur.pos + s;
            emit(e, cur);
            cur.pos = e + 1;
            more = cur.pos < cur.end;
        }
        cur.ctr += KCAP_GOLDEN;
        if (!more) {
            done(cur);
            if (!have) return;
            cur = nx;
            if (cur.c != k.c) k = kcap_skip_consts(a, cur.c);
            have = next(nx);
        }
    }
}

// Walks, for every firing row r with accept(r) (thread-strided), the targets
// of block b below len in increasing order, calling emit and done as
// kcap_walk. keys: the rows' block keys, computed beforehand (or null).
template <typename Accept, typename Emit, typename Done>
__device__ __forceinline__ void kcap_walk_rows(const ProcArgs& a, const FiberSmem& fs, const u16* tab,
                                               u64 b, u32 len, const u64* keys, Accept accept, Emit emit,
                                               Done done) {
    u32 slot = threadIdx.x;
    if (len == 0) return;
    kcap_walk(a, tab, [&](KWalk& it) {
        while (slot < a.slots && !accept(slot)) slot += blockDim.x;
        if (slot >= a.slots) return false;
        // The block key; word(K, t) = mix64(K + t*GOLDEN).
        const u64 k = keys ? keys[slot] : kcap_word(a.row_keys[slot], b);
        it.ctr = k;
        it.klo = (u32)k;
        it.c = fs.scale[kcap_fiber_of(a, fs, slot)];
        it.slot = slot;
        it.pos = 0;
        it.end = len;
        slot += blockDim.x;
        return true;
    }, emit, done);
}

// ---- The lean walk (KCAP_F32) ------------------------------------------------
//
// The walk of kcap_walk for the single-precision variants, written for few
// instructions per draw: the skip is decided without branches (one rare
// branch to the recipe's logarithm), the emit is predicated, and a lane
// whose stretch ends takes its next one from next(KLane&) inside the same
// loop. The skip constants of a lane's fiber come from shared memory at
// each switch. Same draws, same decisions, same targets as kcap_walk with
// KCAP_F32 (kcap_skip_f32, then the recipe).

// One lane's stretch: the state before its next draw.
struct KLane {
    u64 ctr;    // K + t*GOLDEN (K = block key, t = draws so far)
    u32 pos;    // the next draw's skip starts here (block-local)
    u32 end;    // the stretch ends at the first target >= end (end > pos)
    u32 slot;   // firing row
    u32 fib;    // its fiber
    u32 klo;    // low word of K (marks: t from ctr)
};

// The single-precision estimate of draw w's skip, before any comparison
// with the room left (kcap_skip_f32's arithmetic): fl = floor(g - eps) and
// fh = floor(g + eps); the skip is fl wherever fl == fh. g is clamped to
// 2^22 first (above, every stretch surely ends: fl >= 2^22 - 1 > rem), so
// the floors by adding 2^23 are exact; a negative g - eps gives a negative
// fl (the sum stays below 2^23), which never equals fh >= 0.
__device__ __forceinline__ void kcap_est_f32(u64 w, float cl2f, float ea, float rel, int& fl, int& fh) {
    const float g = fminf(kcap_lg2(__ull2float_rn(w) * 5.421010862427522e-20f) * cl2f, 4194304.0f);
    const float eps = __fmaf_ru(g, rel, ea);
    fl = (int)__float_as_uint(__fadd_rd(__fsub_rd(g, eps), 8388608.0f)) - 0x4B000000;
    fh = (int)__float_as_uint(__fadd_rd(__fadd_ru(g, eps), 8388608.0f)) - 0x4B000000;
}

// Decides draw w's skip s (from its estimate fl, fh) with rem targets left
// in the stretch: returns true when the stretch ends, else false with s
// set. fl >= rem proves the end; otherwise fl == fh proves the skip; the
// rest (and draws below 2^-21) take the recipe's logarithm. Flags are
// combined bitwise: no short-circuit branches.
__device__ __forceinline__ bool kcap_decide(u64 w, int fl, int fh, int rem, double c, int& s) {
    bool stop = fl >= rem;
    s = fl;
    const bool slow = ((w >> 43) == 0) | ((fl != fh) & !stop);
    if (slow) {
        const double gd = __dmul_rn(kcap_ln_fast(kcap_unit_open(w)), c);
        stop = gd >= (double)rem;
        s = (int)(u32)(u64)gd;
    }
    return stop;
}

// Draws go in groups of U: a stream's draws are independent words
// of a counter-based generator, so the group's words and logarithms are
// computed side by side (instruction-level parallelism for the warp) and
// only the positions are chained; the draws of a group after the one that
// ends the stretch are wasted ((U - 1) / 2 per stretch on average). U is
// bounded by registers (the hits kernel spills at 4).
#ifndef KCAP_DRAWS_COUNT
#define KCAP_DRAWS_COUNT 2
#endif
#ifndef KCAP_DRAWS_HITS
#define KCAP_DRAWS_HITS 2
#endif
template <int U, typename Next, typename Emit>
__device__ __forceinline__ void kcap_walk_lean(const ProcArgs& a, const FiberSmem& fs, Next next, Emit emit) {
    KLane cur;
    if (!next(cur)) return;
    float cl2f = fs.cl2f[cur.fib], ea = fs.ea[cur.fib];
    const float rel = a.f32_rel;
    for (;;) {
        u64 w[U];
        int fl[U], fh[U];
#pragma unroll
        for (int i = 0; i < U; ++i) {
            w[i] = kcap_mix64(cur.ctr + (u64)i * KCAP_GOLDEN);
            kcap_est_f32(w[i], cl2f, ea, rel, fl[i], fh[i]);
        }
        // emit(e, on): the target e when on; must do nothing when !on
        // (then e is meaningless). Written to be predicated, not branched.
        bool stop = false;
#pragma unroll
        for (int i = 0; i < U; ++i) {
            if (i == 0 || !stop) {
                int s;
                stop = kcap_decide(w[i], fl[i], fh[i], (int)(cur.end - cur.pos), fs.scale[cur.fib], s);
                const u32 e = cur.pos + (u32)s;
                emit(e, !stop, cur);
                cur.pos = e + 1;
                stop |= cur.pos >= cur.end;
                cur.ctr += KCAP_GOLDEN;
            }
        }
        if (stop) {
            if (!next(cur)) return;
            cl2f = fs.cl2f[cur.fib];
            ea = fs.ea[cur.fib];
        }
    }
}

// ---- Marks ------------------------------------------------------------------
//
// A block is cut into S = 2^(16 - seg_bits) segments of 2^seg_bits targets.
// The mark of segment j >= 1 of a (row, block) is the walk's state before
// the first draw that reaches position j*2^seg_bits (or stops): the draws
// so far t and the position pos (pos <= j*2^seg_bits; the row has no target
// in [pos, j*2^seg_bits)). Resuming there (ctr = K + t*GOLDEN) yields exactly
// the row's targets from j*2^seg_bits on, so proc_hits walks each row only
// from the segment of each winner instead of from the block's start.
//
// Recording (proc_count_marks): after each target e the walk's state is
// (t + 1, e + 1), and it is the mark of segment (e >> seg_bits) + 1 if e is
// that segment's last target; so every target stores it into entry
// e >> seg_bits of the row's record (the last store wins) — one shared
// memory store per target, no branch. A segment without targets leaves its
// entry 0, and its mark is the previous segment's (the same draw crosses
// both); proc_hits resolves that by looking back to the last nonzero entry
// (none: t = pos = 0). t + 1 <= e + 1 < 2^16 for every entry that is a mark,
// so an entry is one u32, (t + 1) << 16 | (e + 1), never 0. The record is
// staged in shared memory and written whole (16-byte stores) when the row
// ends, then cleared (entry q of thread i's staged record at q * threads + i,
// so that a warp's stores hit 32 different banks); records have S entries
// rounded up to a multiple of 4
// (the last segment's entry is unused): marks[(b * rows + slot) * rec + i].

// Inverse of the low word of KCAP_GOLDEN mod 2^32 (t from the low word of ctr - K).
#define KCAP_GOLDEN_LO_INV 0x9937733du

// u32 words of one (row, block) record.
__device__ __forceinline__ u32 kcap_mark_rec(u32 seg_bits) {
    return ((1u << (16 - seg_bits)) + 3) & ~3u;
}

// The record of (row slot of `rows`, block b).
__device__ __forceinline__ u64 kcap_mark_record(u64 b, u32 seg_bits, u32 rows, u32 slot) {
    return ((u64)b * rows + slot) * kcap_mark_rec(seg_bits);
}

// The walk's state after the target l just emitted by the draw with low
// counter word dctr = (u32)(ctr - K) (t = draws before it), as a record
// entry (see "Recording" above).
__device__ __forceinline__ u32 kcap_mark_value(u32 l, u32 dctr) {
    const u32 t = dctr * KCAP_GOLDEN_LO_INV;
    return ((t + 1) << 16) + l + 1;
}

// Stages that entry into this thread's record.
__device__ __forceinline__ void kcap_mark_stage(const ProcArgs& a, u32* staged, u32 l, u32 dctr) {
    staged[(l >> a.seg_bits) * blockDim.x] = kcap_mark_value(l, dctr);
}

// Writes this thread's staged record (rec words) as the record of (slot,
// block b) and clears it.
__device__ __forceinline__ void kcap_mark_flush(const ProcArgs& a, u64 b, u32 rec, u32* staged, u32 slot) {
    uint4* dst = (uint4*)(a.marks + kcap_mark_record(b, a.seg_bits, a.slots, slot));
    const u32 w = blockDim.x;
    for (u32 q = 0; q < rec / 4; ++q) {
        u32* st = staged + 4 * q * w;
        dst[q] = make_uint4(st[0], st[w], st[2 * w], st[3 * w]);
        st[0] = st[w] = st[2 * w] = st[3 * w] = 0;
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

// The input of local id l with count c > 0 whose corrections start at
// entry i (of its block's entries, which end at c1): the count plus the
// corrections, summed in f64 in the given order and rounded to f32 (the
// CPU's order and rounding).
__device__ __forceinline__ float kcap_corrected(const ProcArgs& a, u32 i, u32 c1, u32 l, u32 c) {
    double d = (double)c;
    for (u32 j = i; j < c1 && a.corr_local[j] == l; ++j) d = __dadd_rn(d, (double)a.corr_delta[j]);
    return __double2float_rn(d);
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
    // Every id's count as its input (exact: counts are below 2^16), two
    // ids a thread (8-byte stores)...
    u64 received = 0, events = 0;
    for (u32 l = 2 * threadIdx.x; l < len; l += 2 * blockDim.x) {
        const u32 n0 = count(l), n1 = l + 1 < len ? count(l + 1) : 0u;
        received += (n0 != 0) + (n1 != 0);
        events += n0 + n1;
        if (l + 1 < len) {
            *(float2*)(out + l) = make_float2((float)n0, (float)n1);
        } else {
            out[l] = (float)n0;
        }
    }
    // ... then, where the block has corrections, each corrected id with
    // input gets count + its corrections, summed in f64 in the given order
    // and rounded to f32: one thread per run of equal local ids. (The
    // barrier orders these stores after the ones above; c0/c1 are the
    // same for every thread, so all threads reach it.)
    if (c1 > c0) {
        __syncthreads();
        for (u32 i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
            const u32 l = a.corr_local[i];
            if (i > c0 && a.corr_local[i - 1] == l) continue;
            const u32 c = count(l);
            if (c != 0) out[l] = kcap_corrected(a, i, c1, l, c);
        }
    }
    kcap_block_add(received, a.stats);
    kcap_block_add(events, a.stats + 1);
}

// One thread block per target block: counts (from 0, or from a.base), then
// either the inputs (corrections added) or, when a.counts is set, the raw
// counts stored (for the k-cap over them, topk_u16, or as the next step's
// base), with their received ids and events added to a.stats if set.
// MARKS: also the rows' resume marks into a.marks (see "Marks"). KEYS: the
// rows' block keys are computed by all threads together first and kept in
// shared memory, so a thread switching rows reads its next key instead of
// hashing it in a divergent branch (single-precision variants only).
// Dynamic shared memory: 2^15 u32 counter words, then the table, then (with
// marks) one staged mark record per thread, then (KEYS) a.slots u64 keys.
template <bool MARKS, int MODE, bool KEYS>
__device__ __forceinline__ void kcap_count(const ProcArgs& a) {
    extern __shared__ __align__(16) u32 smem[];
    __shared__ FiberSmem fs;
    u32* cnt = smem;
    u16* tab = a.tbits ? (u16*)(smem + KCAP_PBLOCK / 2) : nullptr;
    const u32 rec = MARKS ? kcap_mark_rec(a.seg_bits) : 0u;
    u32* staged = smem + KCAP_PBLOCK / 2 + (a.tbits ? (1u << a.tbits) / 2 : 0u);
    const u64 b = a.block0 + blockIdx.x;
    const u32 len = kcap_block_len(a.n, b);
    if (a.base) {
        // The stored counts are in id order (ids 2i, 2i + 1 in word i):
        // word pair i of each half becomes words 2i, 2i + 1 of cnt, ids
        // (2i, 2i + 2^15) and (2i + 1, 2i + 1 + 2^15) (kcap_cnt_word).
        const u32* src = (const u32*)(a.base + b * KCAP_PBLOCK);
        for (u32 i = threadIdx.x; i < KCAP_PBLOCK / 4; i += blockDim.x) {
            const u32 x = src[i], y = src[i + KCAP_PBLOCK / 4];
            ((uint2*)cnt)[i] = make_uint2(__byte_perm(x, y, 0x5410), __byte_perm(x, y, 0x7632));
        }
    }
    if (MARKS) {
        // Entry q of this thread's record at staged[q * blockDim.x]: a
        // warp's stores fall into 32 different banks.
        for (u32 i = threadIdx.x; i < blockDim.x * rec; i += blockDim.x) staged[i] = 0;
        staged += threadIdx.x;
    }
    u64* keys = nullptr;
    if (KEYS) {
        // After the counters, or after the staged records (no table with KEYS).
        keys = (u64*)(smem + KCAP_PBLOCK / 2 + (MARKS ? blockDim.x * rec : 0u));
        for (u32 i = threadIdx.x; i < a.slots; i += blockDim.x) keys[i] = kcap_word(a.row_keys[i], b);
    }
    kcap_stage(a, fs, cnt, a.base ? 0 : KCAP_PBLOCK / 2, tab);
    if constexpr (MODE == KCAP_F32) {
        // Rows: thread i takes rows i, i + T, ..., i + (S - 1)T (T threads,
        // S = slots / T - 1 rounds, at least 1), then the rest are handed
        // out one at a time from a shared counter (whoever is free takes
        // the next), so the lanes of a warp, and the warps of the block,
        // finish together, while most switches skip the counter's atomic
        // (a warp-wide aggregation of ~12 instructions). Each lane holds
        // the row after its current one (and its key), fetched when it
        // switches, so a switch does not wait for the counter.
        // MARKS: each stretch's record is staged as in kcap_walk_rows and
        // written out when the lane takes its next row (or has none left).
        const u32 rounds = max(a.slots / blockDim.x, 2u) - 1u;
        const u32 dyn0 = rounds * blockDim.x;  // first row handed out by the counter
        u32 nslot = threadIdx.x, prev = ~0u, taken = 1;
        u64 nkey = 0;
        if (nslot < a.slots) nkey = KEYS ? keys[nslot] : kcap_word(a.row_keys[nslot], b);
        const auto flush = [&]() {
            if (MARKS && prev != ~0u) kcap_mark_flush(a, b, rec, staged, prev);
        };
        if (len != 0)
            kcap_walk_lean<KCAP_DRAWS_COUNT>(a, fs, [&](KLane& it) {
                flush();
                if (nslot >= a.slots) return false;
                it.ctr = nkey;
                it.klo = (u32)nkey;
                it.pos = 0;
                it.end = len;
                it.slot = nslot;
                it.fib = kcap_fiber_of(a, fs, nslot);
                prev = nslot;
                nslot = taken < rounds ? nslot + blockDim.x : dyn0 + atomicAdd(&fs.next_row, 1u);
                ++taken;
                if (nslot < a.slots) nkey = KEYS ? keys[nslot] : kcap_word(a.row_keys[nslot], b);
                return true;
            }, [&](u32 l, bool on, const KLane& it) {
                // Always one shared atomic (adding 0 when off), so no branch.
                atomicAdd(&cnt[kcap_cnt_word(l)], on ? kcap_cnt_inc(l) : 0u);
                if (MARKS && on) kcap_mark_stage(a, staged, l, (u32)it.ctr - it.klo);
            });
    } else {
        kcap_walk_rows(a, fs, tab, b, len, keys, [](u32) { return true; },
                       [&](u32 l, const KWalk& it) {
                           atomicAdd(&cnt[kcap_cnt_word(l)], kcap_cnt_inc(l));
                           if (MARKS) kcap_mark_stage(a, staged, l, (u32)it.ctr - it.klo);
                       },
                       [&](const KWalk& it) {
                           if (MARKS) kcap_mark_flush(a, b, rec, staged, it.slot);
                       });
    }
    __syncthreads();
    if (a.counts) {
        // The stored counts' received ids and events go to a.stats (if
        // set): the step's statistics when it takes its inputs from them.
        // Back to id order (the inverse of the load from a.base).
        u32* dst = (u32*)(a.counts + b * KCAP_PBLOCK);
        u64 received = 0, events = 0;
        for (u32 i = threadIdx.x; i < KCAP_PBLOCK / 4; i += blockDim.x) {
            const uint2 w = ((const uint2*)cnt)[i];
            dst[i] = __byte_perm(w.x, w.y, 0x5410);
            dst[i + KCAP_PBLOCK / 4] = __byte_perm(w.x, w.y, 0x7632);
            received += ((w.x & 0xFFFFu) != 0) + ((w.x >> 16) != 0) + ((w.y & 0xFFFFu) != 0) + ((w.y >> 16) != 0);
            events += (w.x & 0xFFFFu) + (w.x >> 16) + (w.y & 0xFFFFu) + (w.y >> 16);
        }
        if (a.stats) {
            kcap_block_add(received, a.stats);
            kcap_block_add(events, a.stats + 1);
        }
        return;
    }
    kcap_inputs(a, b, len, a.values + (u64)blockIdx.x * KCAP_PBLOCK,
                [&](u32 l) { return kcap_cnt_get(cnt, l); });
}

extern "C" __global__ void __launch_bounds__(1024) proc_count(const ProcArgs a) { kcap_count<false, KCAP_ANY, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_count_f32(const ProcArgs a) { kcap_count<false, KCAP_F32, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_count_f32k(const ProcArgs a) { kcap_count<false, KCAP_F32, true>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_count_marks(const ProcArgs a) { kcap_count<true, KCAP_ANY, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_count_marks_f32(const ProcArgs a) { kcap_count<true, KCAP_F32, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_count_marks_f32k(const ProcArgs a) { kcap_count<true, KCAP_F32, true>(a); }

// The inputs of the corrected ids from stored counts (a.counts, ids from
// 0): one thread block per block with corrections (entry blockIdx.x of
// a.corr_blocks). Every corrected id with a count appends (id, input) to
// ids / vals (at most cap; *n counts all) when its input is >= *thresh;
// the other ids' inputs are their counts, which the k-cap reads directly.
extern "C" __global__ void proc_corrected(const ProcArgs a, const float* thresh_at, u64* ids, float* vals, u32* n, u32 cap) {
    const float thresh = *thresh_at;
    const u64 b = a.corr_blocks[blockIdx.x];
    const u32 c0 = a.corr_off[blockIdx.x], c1 = a.corr_off[blockIdx.x + 1];
    const u16* cnt = a.counts + b * KCAP_PBLOCK;
    for (u32 i = c0 + threadIdx.x; i < c1; i += blockDim.x) {
        const u32 l = a.corr_local[i];
        if (i > c0 && a.corr_local[i - 1] == l) continue;
        const u32 c = cnt[l];
        if (c == 0) continue;
        const float v = kcap_corrected(a, i, c1, l, c);
        if (v >= thresh) {
            const u32 j = atomicAdd(n, 1u);
            if (j < cap) {
                ids[j] = b * KCAP_PBLOCK + l;
                vals[j] = v;
            }
        }
    }
}

// The mark of segment j >= 1 from a (row, block) record (see "Marks"): the
// last nonzero entry below j, else the block's start.
__device__ __forceinline__ void kcap_mark_read(const u32* rec, u32 j, u32& t, u32& pos) {
    u32 m = 0;
    while (j > 0 && m == 0) m = rec[--j];
    t = m >> 16;
    pos = m & 0xFFFFu;
}

// The record of (slot, block b) in proc_hits: in a.marks for slots below
// a.mark_split, else in a.marks1.
__device__ __forceinline__ const u32* kcap_marks_of(const ProcArgs& a, u64 b, u32 sb, u32 slot) {
    return slot < a.mark_split ? a.marks + kcap_mark_record(b, sb, a.mark_split, slot)
                               : a.marks1 + kcap_mark_record(b, sb, a.slots - a.mark_split, slot - a.mark_split);
}

// One thread block per target block holding winners (a.wblocks[blockIdx.x]):
// regenerates the rows of the plastic fibers up to the block's last winner
// and lists every (winner, slot) synapse. Rows with marks (a.seg_bits != 0;
// slots below a.mark_split if a.marks, the others if a.marks1) are walked
// only inside the segments holding winners, from the segment's mark up to
// its last winner; the others from the block's start up to its last
// winner. Dynamic shared memory: the winner bitmap (2^11 u32), then the
// table, or (KEYS, as kcap_count) the a.slots block keys. REST: a variant
// for the second part of a split search (a.hits_part == 2, checked by the
// launcher), whose rows have no marks: the switch to the next row skips
// the marked items' bookkeeping (lean walk only).
#define KCAP_MAX_SEGS 16
template <int MODE, bool KEYS, bool REST = false>
__device__ __forceinline__ void kcap_hits(const ProcArgs& a) {
    extern __shared__ __align__(16) u32 smem[];
    __shared__ FiberSmem fs;
    __shared__ u32 seg_end[KCAP_MAX_SEGS];  // last winner + 1 of each segment, 0: none
    __shared__ u32 occ[KCAP_MAX_SEGS];      // the segments holding winners
    __shared__ u32 nocc, last;
    u32* marks = smem;
    u16* tab = a.tbits ? (u16*)(smem + KCAP_PBLOCK / 32) : nullptr;
    const u64 b = a.wblocks[blockIdx.x];
    const u32 w0 = a.woff[blockIdx.x], w1 = a.woff[blockIdx.x + 1];
    const u32 sb = a.seg_bits ? a.seg_bits : 16;
    for (u32 j = threadIdx.x; j < KCAP_MAX_SEGS; j += blockDim.x) seg_end[j] = 0;
    u64* keys = nullptr;
    if (KEYS) {
        keys = (u64*)(smem + KCAP_PBLOCK / 32);
        for (u32 i = threadIdx.x; i < a.slots; i += blockDim.x) keys[i] = kcap_word(a.row_keys[i], b);
    }
    kcap_stage(a, fs, marks, KCAP_PBLOCK / 32, tab);
    for (u32 i = w0 + threadIdx.x; i < w1; i += blockDim.x) {
        const u32 l = a.wlocal[i];
        atomicOr(&marks[l >> 5], 1u << (l & 31));
        atomicMax(&seg_end[l >> sb], l + 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 m = 0;
        for (u32 j = 0; j < (1u << (16 - sb)); ++j)
            if (seg_end[j]) occ[m++] = j;
        nocc = m;
        last = seg_end[occ[m - 1]];
    }
    __syncthreads();
    const u64 base = b * KCAP_PBLOCK;
    // Marked slots [m0, m1): one stretch per (occupied segment, slot), slot
    // fastest so that a warp's mark loads are near each other; then the
    // unmarked slots, one stretch each.
    const bool on = a.seg_bits != 0;
    const u32 m0 = on && a.marks ? 0 : a.mark_split;
    const u32 m1 = on && a.marks1 ? a.slots : a.mark_split;
    const u32 nm = m1 - m0, nmarked = nocc * nm, nitems = nmarked + (a.slots - nm);
    const auto hit = [&](u32 l, u32 slot) {
        if ((marks[l >> 5] >> (l & 31)) & 1u) {
            const u32 i = atomicAdd(a.hits_count, 1u);
            if (i < a.hits_cap) a.hits[i] = ((base + l) << 16) | slot;
        }
    };
    // Two launches can split the work (a.hits_part), so that the marked
    // rows' synapses come back while the others are still searched.
    const u32 iend = a.hits_part == 1 ? nmarked : nitems;
    u32 item = (a.hits_part == 2 ? nmarked : 0u) + threadIdx.x;
    if constexpr (MODE == KCAP_F32) {
        // The lean walk. A thread's stretches in item order; the marked
        // items' (segment, slot) are tracked incrementally (no division per
        // stretch), and the next stretch is fetched one ahead, so the load
        // of its mark overlaps the walk of the current one.
        u32 jidx = 0, sidx = 0;
        if (!REST && nm != 0) {
            jidx = item / nm;
            sidx = item % nm;
        }
        u64 pkey = 0;
        const u32* prec = nullptr;
        u32 pm = 0, pj = 0, pslot = 0, pend = 0, pfib = 0;
        const auto fetch = [&]() {
            while (item < iend) {
                u32 slot, j = 0;
                const bool marked = !REST && item < nmarked;
                if (marked) {
                    slot = m0 + sidx;
                    j = occ[jidx];
                    sidx += blockDim.x;
                    while (sidx >= nm) {
                        sidx -= nm;
                        ++jidx;
                    }
                } else {
                    const u32 u = item - nmarked;
                    slot = u < m0 ? u : m1 + (u - m0);
                }
                item += blockDim.x;
                const u32 f = kcap_fiber_of(a, fs, slot);
                if (!fs.plastic[f]) continue;
                pkey = KEYS ? keys[slot] : kcap_word(a.row_keys[slot], b);
                pj = j;
                pm = 0;
                if (!REST && j > 0) {
                    prec = kcap_marks_of(a, b, sb, slot);
                    pm = prec[j - 1];
                }
                pslot = slot;
                pfib = f;
                pend = marked ? seg_end[j] : last;
                return true;
            }
            return false;
        };
        bool have = fetch();
        kcap_walk_lean<KCAP_DRAWS_HITS>(a, fs, [&](KLane& it) {
            if (!have) return false;
            // The mark (kcap_mark_read): entry j - 1, else the last nonzero
            // one below it, else the block's start.
            u32 m = REST ? 0u : pm;
            if (!REST)
                for (u32 j = pj > 0 ? pj - 1 : 0; j > 0 && m == 0;) m = prec[--j];
            it.ctr = pkey + (u64)(m >> 16) * KCAP_GOLDEN;
            it.pos = m & 0xFFFFu;
            it.end = pend;
            it.slot = pslot;
            it.fib = pfib;
            it.klo = 0;
            have = fetch();
            return true;
        }, [&](u32 l, bool on, const KLane& it) {
            if (on) hit(l, it.slot);
        });
    } else {
        kcap_walk(a, tab, [&](KWalk& it) {
            for (; item < iend; item += blockDim.x) {
                u32 slot, j = 0;
                if (item < nmarked) {
                    slot = m0 + item % nm;
                    j = occ[item / nm];
                } else {
                    const u32 u = item - nmarked;
                    slot = u < m0 ? u : m1 + (u - m0);
                }
                const u32 f = kcap_fiber_of(a, fs, slot);
                if (!fs.plastic[f]) continue;
                const u64 k = KEYS ? keys[slot] : kcap_word(a.row_keys[slot], b);
                u32 t = 0, pos = 0;
                if (j > 0) kcap_mark_read(kcap_marks_of(a, b, sb, slot), j, t, pos);
                it.ctr = k + (u64)t * KCAP_GOLDEN;
                it.klo = 0;
                it.c = fs.scale[f];
                it.slot = slot;
                it.pos = pos;
                it.end = item < nmarked ? seg_end[j] : last;
                item += blockDim.x;
                return true;
            }
            return false;
    }, [&](u32 l, const KWalk& it) { hit(l, it.slot); }, [](const KWalk&) {});
    }
}

extern "C" __global__ void __launch_bounds__(1024) proc_hits(const ProcArgs a) { kcap_hits<KCAP_ANY, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_hits_f32(const ProcArgs a) { kcap_hits<KCAP_F32, false>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_hits_f32k(const ProcArgs a) { kcap_hits<KCAP_F32, true>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_hits_f32_rest(const ProcArgs a) { kcap_hits<KCAP_F32, false, true>(a); }
extern "C" __global__ void __launch_bounds__(1024) proc_hits_f32k_rest(const ProcArgs a) { kcap_hits<KCAP_F32, true, true>(a); }

// The single-precision path's error of kcap_lg2 over every float x in
// [2^-21, 1], as float bits (atomicMax): out[0] = the largest |error| for x
// in [1/2, 1], out[1] = the largest |error| / |log2 x| for x in [2^-21, 1/2).
extern "C" __global__ void proc_log2_error_f32(u32* out) {
    float wa = 0.0f, wr = 0.0f;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i <= 21u << 23; i += gridDim.x * blockDim.x) {
        // biased exponent 126 ([1/2, 1)) down to 106 ([2^-21, 2^-20)); i = 21 << 23: x = 1
        const u32 e = i == 21u << 23 ? 127u : 126u - (i >> 23);
        const float x = __uint_as_float((e << 23) | (i & 0x7fffffu));
        const double l = log2((double)x);
        const double err = fabs((double)kcap_lg2(x) - l);
        if (e >= 126u) wa = fmaxf(wa, (float)err * 1.001f);
        else wr = fmaxf(wr, (float)(err / fabs(l)) * 1.001f);
    }
    atomicMax(out, __float_as_uint(wa));
    atomicMax(out + 1, __float_as_uint(wr));
}

// out[i] = values[ids[i]]
extern "C" __global__ void proc_gather(const float* values, const u32* ids, float* out, u32 k) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < k; i += gridDim.x * blockDim.x) out[i] = values[ids[i]];
}

// *out = the least of v[0..n) (one thread block; the k-th count of a
// k-cap from its gathered counts, proc_corrected's threshold).
extern "C" __global__ void proc_min_f32(const float* v, u32 n, float* out) {
    __shared__ float part[32];
    float m = __int_as_float(0x7f800000);  // +inf
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) m = fminf(m, v[i]);
    for (int o = 16; o > 0; o >>= 1) m = fminf(m, __shfl_down_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (u32 w = 1; w < (blockDim.x + 31) / 32; ++w) m = fminf(m, part[w]);
        *out = m;
    }
}

// out[i] = counts[ids[i]], as f32 (exact)
extern "C" __global__ void proc_gather_u16(const u16* counts, const u32* ids, float* out, u32 k) {
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < k; i += gridDim.x * blockDim.x) out[i] = (float)counts[ids[i]];
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
