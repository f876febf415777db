// topk.cuh — k-cap by radix select (AIR-style), generic over the value type.
//
// Included by topk_f32.cu and topk_f16.cu after they define:
//   KCAP_VBITS            bits of the order-preserving value key (32 or 16)
//   KCAP_VEC              values per 16-byte vector load (4 or 8)
//   kcap_vkey_at(p, j)    key of value j (scalar load)
//   kcap_vkey_vec(v, i)   key of the i-th value packed in a uint4
//   kcap_any_ge_vec(v, t) true if a key of the values packed in v is >= t
//   KCAP_SUFFIX(name)     appends _f32 / _f16 to a kernel name
//
// The selection key. Every element j (a position of a dense vector, or an
// entry of a sparse candidate list with id ids[j]) gets the composite key
//     comp = (vkey << ib) | (base - id)        (u64, unique per element)
// with base = n - 1 for a dense vector (ib = bits of n - 1) and base = 2^32 - 1
// for a sparse list (ib = 32). Larger comp = larger value, then LOWER id: the
// k largest composite keys are exactly the CPU k-cap (crates/kcap/src/cap.rs,
// ties to the lowest index), as a set.
//
// The radix select finds the k-th largest composite key digit by digit (at
// most 11 bits a digit, most significant first). Pass p histograms digit p of
// the "live" elements (those whose higher digits equal the k-th key's, known
// so far); the last block to finish picks the digit of the k-th key from the
// histogram. Elements above it are emitted in the next pass, elements in its
// bin stay live. Live elements are copied into a candidate buffer as soon as
// their count fits it, so later passes read only them (AIR top-k, Zhang et
// al., SC'23). Because comp is unique, the bin of the k-th key eventually
// holds exactly the number still needed, and a last pass emits it.
//
// Large dense inputs are first *prefiltered*: a strided sample of the values
// gives a threshold T that at least k elements exceed with overwhelming
// probability; one pass over the input copies every element with vkey >= T
// into the candidate buffer, and the radix passes run on that buffer only. If
// fewer than k elements pass (an unlucky sample) or the buffer overflows
// (heavy ties), the passes fall back to reading the input: the result is the
// same, only slower. So a large top-k reads its input once.

#define KCAP_BINS 2048
#define KCAP_MAX_DIGIT 11

struct TopkState {
    u64 prefix;         // high bits (>= known_lo) of the k-th composite key
    u64 pad0;
    u32 k_rem;          // elements still to choose among the live ones
    u32 known_lo;       // bits >= known_lo of the k-th key are known
    u32 prev_lo;        // known_lo before the last decision (64: none)
    u32 src;            // next pass reads: 0 the input, 1 buffer 0, 2 buffer 1
    u32 write;          // next pass copies live elements to: 0 none, 1 buffer 0, 2 buffer 1
    u32 done;           // the last decision took its whole bin: next pass only emits
    u32 finished;       // all k emitted; later passes return at once
    u32 blocks_done;    // last-block ticket
    u32 count[2];       // elements written to buffer 0 / 1 (may exceed cap: overflow)
    u32 out_count;      // ids emitted so far
    u32 thresh;         // prefilter threshold on vkey (from the sample)
    u32 prefilter_ok;   // 1: the radix passes run on the prefiltered buffer
    u32 overflow;       // 1: more than k ids were emitted (a bug; checked by the host)
    u32 pad1[2];
    u32 hist[KCAP_BINS];
    u32 shist[KCAP_BINS];  // sample histogram (top 11 key bits); zero between calls
};

struct TopkArgs {
    const void* values;   // f32 or f16 values: dense vector or sparse list values
    const u32* ids;       // sparse list ids (NULL: dense, id = position)
    u64 n;                // number of elements
    u64 base;             // comp low bits = base - id
    u32 ib;               // index bits in comp
    u32 k;                // 1 <= k < n (the host handles the rest)
    u32 cap;              // capacity of each candidate buffer (elements)
    u32 aligned;          // 1: values is 16-byte aligned and dense (vector loads)
    u64* buf0;
    u64* buf1;
    u32* out;             // k ids, unordered
    u32* sample;          // nsample sample keys
    u32 nsample;
    u32 target;           // rank (1-based, from the top) of the sample key used as threshold
    TopkState* st;
};

// The host mirrors both layouts (src/ops/topk.rs: field offsets of TopkState
// are ST_* word indices there; the GPU tests read them back).
static_assert(sizeof(TopkArgs) == 96, "TopkArgs layout is shared with Rust");
static_assert(sizeof(TopkState) == 80 + 8 * KCAP_BINS, "TopkState layout is shared with Rust");

__device__ __forceinline__ u32 kcap_lane() { return threadIdx.x & 31u; }

// Per-warp staging of appends in shared memory: a warp collects up to SEG
// entries in its own segment and copies them out with ONE global atomic per
// flush. Sparse appends (a candidate every few thousand elements) would
// otherwise serialise on the single global counter: 7e5 same-address
// atomics cost ~0.7 ms on an H100. `n` is the same in all lanes.
#define KCAP_SEG 64
#define KCAP_BLOCK 256
#define KCAP_WARPS (KCAP_BLOCK / 32)
template <typename V>
struct KcapStage {
    V* seg;
    u32 n;
    __device__ __forceinline__ void init(V* block_segs) {
        seg = block_segs + (threadIdx.x >> 5) * KCAP_SEG;
        n = 0;
    }
    __device__ __forceinline__ void flush(V* dst, u32* counter, u32 cap) {
        __syncwarp();
        if (n) {
            u32 base = 0;
            if (kcap_lane() == 0) base = atomicAdd(counter, n);
            base = __shfl_sync(0xffffffffu, base, 0);
            for (u32 i = kcap_lane(); i < n; i += 32) {
                if (base + i < cap) dst[base + i] = seg[i];
            }
            n = 0;
        }
        __syncwarp();
    }
    // All 32 lanes call it; lanes with `pred` append `val`.
    __device__ __forceinline__ void append(bool pred, V val, V* dst, u32* counter, u32 cap) {
        const u32 mask = __ballot_sync(0xffffffffu, pred);
        if (mask == 0) return;
        const u32 c = __popc(mask);
        if (n + c > KCAP_SEG) flush(dst, counter, cap);
        if (pred) seg[n + __popc(mask & ((1u << kcap_lane()) - 1u))] = val;
        n += c;
    }
};

// Adds 1 to h[digit] for every lane with `pred`, one shared atomic per
// distinct digit in the warp (ties all land in one bin).
__device__ __forceinline__ void kcap_warp_hist(bool pred, u32 digit, u32* h) {
    const u32 key = pred ? digit : 0xffffffffu;
    const u32 peers = __match_any_sync(0xffffffffu, key);
    if (pred && (__ffs(peers) - 1) == kcap_lane()) atomicAdd(&h[digit], (u32)__popc(peers));
}

// Block-wide: given nb bin counts h (readable by all threads), finds the bin
// b holding the rank-`kr` element counted from the top: sum_{d>b} h[d] < kr <=
// sum_{d>=b} h[d]. Writes b and the count above it to res[0], res[1].
// Requires nb % blockDim.x == 0 or nb < blockDim.x; scratch: blockDim.x u32s.
__device__ void kcap_find_bin(const u32* h, u32 nb, u32 kr, u32* scratch, u32* res) {
    const u32 t = threadIdx.x, nt = blockDim.x;
    const u32 per = (nb + nt - 1) / nt;
    // Thread t owns bins [nb - (t+1)*per, nb - t*per): thread 0 the top ones.
    const int hi = (int)nb - (int)(t * per);
    const int lo = max(hi - (int)per, 0);
    u32 local = 0;
    for (int d = lo; d < hi; ++d) local += h[d];
    scratch[t] = local;
    __syncthreads();
    // Inclusive prefix over threads (Hillis–Steele): scratch[t] = sum_{u<=t}.
    for (u32 off = 1; off < nt; off <<= 1) {
        u32 v = (t >= off) ? scratch[t - off] : 0;
        __syncthreads();
        scratch[t] += v;
        __syncthreads();
    }
    u32 run = scratch[t] - local;  // elements in bins above this thread's range
    if (run < kr && run + local >= kr) {
        for (int d = hi - 1; d >= lo; --d) {
            if (run + h[d] >= kr) {
                res[0] = (u32)d;
                res[1] = run;
                break;
            }
            run += h[d];
        }
    }
    __syncthreads();
}

// True in exactly one block (its thread 0 took the last ticket); all threads
// of that block see it. Call after the block's global writes.
__device__ __forceinline__ bool kcap_last_block(u32* ticket) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = (atomicAdd(ticket, 1u) == gridDim.x - 1);
    __syncthreads();
    if (last) __threadfence();
    return last;
}

__device__ __forceinline__ u64 kcap_comp(u32 vkey, u64 id, const TopkArgs& a) {
    return ((u64)vkey << a.ib) | (a.base - id);
}

__device__ __forceinline__ u32 kcap_id_of(u64 comp, const TopkArgs& a) {
    const u64 mask = (a.ib >= 64) ? ~0ULL : ((1ULL << a.ib) - 1ULL);
    return (u32)(a.base - (comp & mask));
}

// ---- init: one block -------------------------------------------------------
__device__ void kcap_topk_init(const TopkArgs& a) {
    TopkState* st = a.st;
    for (u32 i = threadIdx.x; i < KCAP_BINS; i += blockDim.x) st->hist[i] = 0;
    if (threadIdx.x == 0) {
        st->prefix = 0;
        st->k_rem = a.k;
        st->known_lo = KCAP_VBITS + a.ib;  // bits above the composite key are 0
        st->prev_lo = 64;
        st->src = 0;
        st->write = 0;
        st->done = 0;
        st->finished = 0;
        st->blocks_done = 0;
        st->count[0] = 0;
        st->count[1] = 0;
        st->out_count = 0;
        st->thresh = 0;
        st->prefilter_ok = 0;
        st->overflow = 0;
    }
}

// ---- sample: nsample strided value keys -------------------------------------
// Block 0 also initialises the state (saves the init launch when sampling).
// Every block histograms the top 11 bits of its samples' keys into
// st->shist (round 1 of the threshold search, spread over the grid; the
// threshold kernel reads and re-zeroes it).
#define KCAP_SAMPLE_TOP (KCAP_VBITS - 11)
__device__ void kcap_topk_sample(const TopkArgs& a) {
    __shared__ u32 h[KCAP_BINS];
    if (blockIdx.x == 0) kcap_topk_init(a);
    for (u32 i = threadIdx.x; i < KCAP_BINS; i += blockDim.x) h[i] = 0;
    __syncthreads();
    const u32 nsamp = (a.nsample + 31u) & ~31u;  // whole warps iterate together
    for (u32 s = blockIdx.x * blockDim.x + threadIdx.x; s < nsamp; s += gridDim.x * blockDim.x) {
        const bool valid = s < a.nsample;
        u32 key = 0;
        if (valid) {
            key = kcap_vkey_at(a.values, (u64)s * a.n / a.nsample);
            a.sample[s] = key;
        }
        kcap_warp_hist(valid, key >> KCAP_SAMPLE_TOP, h);
    }
    __syncthreads();
    for (u32 i = threadIdx.x; i < KCAP_BINS; i += blockDim.x) {
        if (h[i]) atomicAdd(&a.st->shist[i], h[i]);
    }
}

// ---- threshold: one block; the target-th largest sample key -----------------
// Only affects speed: any threshold gives the exact result (the prefilter
// checks that at least k elements pass it, else the passes read the input).
__device__ void kcap_topk_threshold(const TopkArgs& a) {
    __shared__ u32 h[KCAP_BINS];
    __shared__ u32 scratch[1024];
    __shared__ u32 res[2];
    TopkState* st = a.st;
    // Round 1 from the sample kernel's histogram of the top 11 bits.
    for (u32 i = threadIdx.x; i < KCAP_BINS; i += blockDim.x) {
        h[i] = __ldcg(&st->shist[i]);
        st->shist[i] = 0;
    }
    __syncthreads();
    u32 kr = a.target;
    kcap_find_bin(h, KCAP_BINS, kr, scratch, res);
    u32 prefix = res[0] << KCAP_SAMPLE_TOP;
    kr -= res[1];
    u32 hi = KCAP_SAMPLE_TOP;
    __syncthreads();
    // Then the remaining bits (5 for f16; 11 + 10 for f32) over the samples
    // that share the prefix: few, so a warp without any skips the adds.
#if KCAP_VBITS == 16
    const int rounds = 1;
    const u32 los[2] = {0, 0};
#else
    const int rounds = 2;
    const u32 los[2] = {10, 0};
#endif
    const u32 nsamp = (a.nsample + 31u) & ~31u;
    for (int r = 0; r < rounds; ++r) {
        const u32 lo = los[r], width = hi - lo, nb = 1u << width;
        for (u32 i = threadIdx.x; i < KCAP_BINS; i += blockDim.x) h[i] = 0;
        __syncthreads();
        // 8 independent loads in flight per thread, then 8 histogram adds.
        for (u32 s0 = threadIdx.x; s0 < nsamp; s0 += 8 * blockDim.x) {
            u32 keys[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const u32 s = s0 + u * blockDim.x;
                keys[u] = s < a.nsample ? a.sample[s] : 0u;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const u32 s = s0 + u * blockDim.x;
                const bool live = s < a.nsample && (keys[u] >> hi) == (prefix >> hi);
                if (__any_sync(0xffffffffu, live)) kcap_warp_hist(live, (keys[u] >> lo) & (nb - 1), h);
            }
        }
        __syncthreads();
        kcap_find_bin(h, nb, kr, scratch, res);
        prefix |= res[0] << lo;
        kr -= res[1];
        hi = lo;
        __syncthreads();
    }
    if (threadIdx.x == 0) st->thresh = prefix;
}

// ---- prefilter: one pass over the input, vkey >= thresh -> buffer 0 ----------
__device__ void kcap_topk_prefilter(const TopkArgs& a) {
    TopkState* st = a.st;
    __shared__ u64 segs[KCAP_WARPS * KCAP_SEG];
    KcapStage<u64> cand;
    cand.init(segs);
    const u32 thresh = st->thresh;
    const u32 lane = kcap_lane();
    const u64 gw = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u64 nw = ((u64)gridDim.x * blockDim.x) >> 5;
    u64 scalar_from = 0;
    if (a.aligned) {
        const uint4* v4 = (const uint4*)a.values;
        const u64 nv = a.n / KCAP_VEC;
        const int U = 4;
        for (u64 w0 = gw * 32 * U; w0 < nv; w0 += nw * 32 * U) {
            uint4 r[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const u64 i = w0 + u * 32 + lane;
                if (i < nv) r[u] = __ldcs(v4 + i);
                else r[u] = make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const u64 i = w0 + u * 32 + lane;
                const bool any = (i < nv) && kcap_any_ge_vec(r[u], thresh);
                if (__any_sync(0xffffffffu, any)) {
#pragma unroll
                    for (int e = 0; e < KCAP_VEC; ++e) {
                        const u32 key = kcap_vkey_vec(r[u], e);
                        const bool pass = (i < nv) && key >= thresh;
                        cand.append(pass, kcap_comp(key, i * KCAP_VEC + e, a), a.buf0, &st->count[0], a.cap);
                    }
                }
            }
        }
        scalar_from = nv * KCAP_VEC;
    }
    for (u64 w0 = scalar_from + gw * 32; w0 < a.n; w0 += nw * 32) {
        const u64 j = w0 + lane;
        bool pass = false;
        u64 comp = 0;
        if (j < a.n) {
            const u32 key = kcap_vkey_at(a.values, j);
            const u64 id = a.ids ? (u64)a.ids[j] : j;
            pass = key >= thresh;
            comp = kcap_comp(key, id, a);
        }
        cand.append(pass, comp, a.buf0, &st->count[0], a.cap);
    }
    cand.flush(a.buf0, &st->count[0], a.cap);
    if (kcap_last_block(&st->blocks_done) && threadIdx.x == 0) {
        const u32 cnt = *(volatile u32*)&st->count[0];
        if (cnt >= a.k && cnt <= a.cap) {
            st->src = 1;  // pass 0 histograms buffer 0 without copying it
            st->write = 0;
            st->prefilter_ok = 1;
        } else {
            st->src = 0;
            st->write = 0;
            st->count[0] = 0;
        }
        st->blocks_done = 0;
    }
}

// ---- one radix pass ------------------------------------------------------------
// Emits the elements the last decision put above the k-th key, histograms
// digit [lo, known_lo) of the live ones (copying them to the write buffer),
// and lets the last block decide the digit.
struct KcapPassCtx {
    u64 pk, pp;
    u32 known_lo, prev_lo, lo, width, done;
    u64* dst;
    u32* dcnt;
    KcapStage<u32> out;
    KcapStage<u64> live;
};

__device__ __forceinline__ void kcap_pass_elem(bool valid, u64 comp, KcapPassCtx& c, const TopkArgs& a, u32* h) {
    const u64 ck = kcap_shr(comp, c.known_lo);
    const bool same = valid && ck == c.pk;
    const bool above = valid && !same && kcap_shr(comp, c.prev_lo) == c.pp && ck > c.pk;
    const bool emit = above || (same && c.done);
    const bool live = same && !c.done;
    c.out.append(emit, emit ? kcap_id_of(comp, a) : 0u, a.out, &a.st->out_count, a.k);
    if (!c.done) {
        const u32 digit = (u32)(comp >> c.lo) & ((1u << c.width) - 1u);
        kcap_warp_hist(live, digit, h);
        if (c.dst) c.live.append(live, comp, c.dst, c.dcnt, a.cap);
    }
}

__device__ void kcap_topk_pass(const TopkArgs& a, u32 lo) {
    TopkState* st = a.st;
    __shared__ u32 h[KCAP_BINS];
    __shared__ u32 scratch[1024];
    __shared__ u32 res[2];
    __shared__ u32 out_segs[KCAP_WARPS * KCAP_SEG];
    __shared__ u64 live_segs[KCAP_WARPS * KCAP_SEG];
    if (*(volatile u32*)&st->finished) return;  // uniform over the grid
    KcapPassCtx c;
    c.out.init(out_segs);
    c.live.init(live_segs);
    c.known_lo = st->known_lo;
    c.prev_lo = st->prev_lo;
    c.done = st->done;
    c.lo = c.done ? 0 : lo;
    c.width = c.done ? 1 : (c.known_lo - lo);
    c.pk = kcap_shr(st->prefix, c.known_lo);
    c.pp = kcap_shr(st->prefix, c.prev_lo);
    const u32 src = st->src, wr = c.done ? 0 : st->write;
    c.dst = wr == 1 ? a.buf0 : (wr == 2 ? a.buf1 : (u64*)0);
    c.dcnt = wr ? &st->count[wr - 1] : (u32*)0;
    const u32 nb = 1u << c.width;
    for (u32 i = threadIdx.x; i < nb; i += blockDim.x) h[i] = 0;
    __syncthreads();

    const u32 lane = kcap_lane();
    const u64 gw = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u64 nw = ((u64)gridDim.x * blockDim.x) >> 5;
    if (src != 0) {
        const u64* b = src == 1 ? a.buf0 : a.buf1;
        const u64 m = min(st->count[src - 1], a.cap);
        for (u64 w0 = gw * 32; w0 < m; w0 += nw * 32) {
            const u64 j = w0 + lane;
            const bool valid = j < m;
            kcap_pass_elem(valid, valid ? __ldcg(b + j) : 0ULL, c, a, h);
        }
    } else {
        u64 scalar_from = 0;
        if (a.aligned) {
            const uint4* v4 = (const uint4*)a.values;
            const u64 nv = a.n / KCAP_VEC;
            for (u64 w0 = gw * 32; w0 < nv; w0 += nw * 32) {
                const u64 i = w0 + lane;
                const bool valid = i < nv;
                const uint4 r = valid ? __ldcs(v4 + i) : make_uint4(0, 0, 0, 0);
#pragma unroll
                for (int e = 0; e < KCAP_VEC; ++e) {
                    kcap_pass_elem(valid, kcap_comp(kcap_vkey_vec(r, e), i * KCAP_VEC + e, a), c, a, h);
                }
            }
            scalar_from = nv * KCAP_VEC;
        }
        for (u64 w0 = scalar_from + gw * 32; w0 < a.n; w0 += nw * 32) {
            const u64 j = w0 + lane;
            const bool valid = j < a.n;
            u64 comp = 0;
            if (valid) comp = kcap_comp(kcap_vkey_at(a.values, j), a.ids ? (u64)a.ids[j] : j, a);
            kcap_pass_elem(valid, comp, c, a, h);
        }
    }
    c.out.flush(a.out, &st->out_count, a.k);
    if (c.dst) c.live.flush(c.dst, c.dcnt, a.cap);
    __syncthreads();
    if (!c.done) {
        for (u32 i = threadIdx.x; i < nb; i += blockDim.x) {
            if (h[i]) atomicAdd(&st->hist[i], h[i]);
        }
    }
    if (!kcap_last_block(&st->blocks_done)) return;

    // The last block: decide.
    if (c.done) {
        if (threadIdx.x == 0) {
            st->finished = 1;
            if (*(volatile u32*)&st->out_count != a.k) st->overflow = 1;
        }
        return;
    }
    for (u32 i = threadIdx.x; i < nb; i += blockDim.x) h[i] = __ldcg(&st->hist[i]);
    __syncthreads();
    const u32 kr = st->k_rem;
    if (threadIdx.x == 0) res[0] = 0xffffffffu;
    __syncthreads();
    kcap_find_bin(h, nb, kr, scratch, res);
    if (res[0] == 0xffffffffu) {  // fewer live elements than needed: cannot happen
        if (threadIdx.x == 0) {
            st->overflow = 1;
            st->finished = 1;
        }
        return;
    }
    for (u32 i = threadIdx.x; i < nb; i += blockDim.x) st->hist[i] = 0;
    if (threadIdx.x == 0) {
        const u32 b = res[0], above = res[1];
        const u32 k_rem = kr - above;
        st->prefix |= (u64)b << lo;
        st->k_rem = k_rem;
        st->prev_lo = c.known_lo;
        st->known_lo = lo;
        st->done = (h[b] == k_rem) ? 1u : 0u;
        if (wr || src) {
            // Next pass reads the buffer this pass wrote (or, if it wrote
            // none, the buffer it read) and writes the other one.
            const u32 from = wr ? wr : src;
            const u32 next = from == 1 ? 2u : 1u;
            st->src = from;
            st->write = next;
            st->count[next - 1] = 0;
        } else {
            st->src = 0;
            if (h[b] <= a.cap) {
                st->write = 1;
                st->count[0] = 0;
            } else {
                st->write = 0;
            }
        }
        st->blocks_done = 0;
    }
}

#define KCAP_TOPK_ENTRY_POINTS                                                                         \
    extern "C" __global__ void KCAP_SUFFIX(topk_init)(TopkArgs a) { kcap_topk_init(a); }               \
    extern "C" __global__ void KCAP_SUFFIX(topk_sample)(TopkArgs a) { kcap_topk_sample(a); }           \
    extern "C" __global__ void __launch_bounds__(1024) KCAP_SUFFIX(topk_threshold)(TopkArgs a) {      \
        kcap_topk_threshold(a);                                                                        \
    }                                                                                                  \
    extern "C" __global__ void __launch_bounds__(KCAP_BLOCK, 4) KCAP_SUFFIX(topk_prefilter)(TopkArgs a) { kcap_topk_prefilter(a); }     \
    extern "C" __global__ void __launch_bounds__(KCAP_BLOCK) KCAP_SUFFIX(topk_pass)(TopkArgs a, u32 lo) { kcap_topk_pass(a, lo); }
