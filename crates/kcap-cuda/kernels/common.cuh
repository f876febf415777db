// common.cuh — device functions shared by every kcap kernel.
//
// Prepended (as text) to each .cu file by the Rust module cache, so every
// module sees the same definitions. Everything here is bit-identical to the
// Rust code it mirrors (crates/kcap/src/rng.rs, stats.rs, cap.rs):
// integer arithmetic wraps mod 2^64 like Rust's wrapping_* operations, and
// floating point uses explicit round-to-nearest intrinsics (__dadd_rn,
// __dmul_rn, __ddiv_rn), which the compiler never contracts into FMAs, so the
// result does not depend on --fmad or on the optimiser.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned short u16;

// ---- counter-based generator (crates/kcap/src/rng.rs) ----------------------

#define KCAP_GOLDEN 0x9E3779B97F4A7C15ULL

// SplitMix64's output mixer (rng::mix64).
__device__ __forceinline__ u64 kcap_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// rng::derive(parent, words[0..n]).
__device__ __forceinline__ u64 kcap_derive(u64 parent, const u64* words, u32 n) {
    u64 h = kcap_mix64(parent ^ 0x5851F42D4C957F2DULL);
    for (u32 i = 0; i < n; ++i) {
        h = kcap_mix64((h + KCAP_GOLDEN) ^ kcap_mix64(words[i] + 0x2545F4914F6CDD1DULL));
    }
    return h;
}

// rng::word(key, counter): the counter-th 64-bit word of stream `key`.
__device__ __forceinline__ u64 kcap_word(u64 key, u64 counter) {
    return kcap_mix64(key + counter * KCAP_GOLDEN);
}

// rng::unit_open: 64 random bits to a uniform double in (0, 1). Both
// operations are exact (53-bit integer + 0.5, times a power of two).
__device__ __forceinline__ double kcap_unit_open(u64 bits) {
    return __dmul_rn(__dadd_rn((double)(bits >> 11), 0.5), __longlong_as_double(0x3ca0000000000000LL));
}

// stats::ln_fast: exponent split and the atanh series, operation by operation
// in the same order as the Rust code (Rust never fuses a*b+c).
__device__ __forceinline__ double kcap_ln_fast(double x) {
    const double SQRT_2 = __longlong_as_double(0x3ff6a09e667f3bcdLL);
    const double LN_2 = __longlong_as_double(0x3fe62e42fefa39efLL);
    const double C3 = __longlong_as_double(0x3fd5555555555555LL);   // 1/3
    const double C5 = __longlong_as_double(0x3fc999999999999aLL);   // 1/5
    const double C7 = __longlong_as_double(0x3fc2492492492492LL);   // 1/7
    const double C9 = __longlong_as_double(0x3fbc71c71c71c71cLL);   // 1/9
    const double C11 = __longlong_as_double(0x3fb745d1745d1746LL);  // 1/11
    const double C13 = __longlong_as_double(0x3fb3b13b13b13b14LL);  // 1/13
    const double C15 = __longlong_as_double(0x3fb1111111111111LL);  // 1/15
    u64 bits = (u64)__double_as_longlong(x);
    i64 e = (i64)((bits >> 52) & 0x7ff) - 1023;
    double m = __longlong_as_double((i64)((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL));
    if (m > SQRT_2) {
        m = __dmul_rn(m, 0.5);
        e += 1;
    }
    double s = __ddiv_rn(__dadd_rn(m, -1.0), __dadd_rn(m, 1.0));
    double s2 = __dmul_rn(s, s);
    double p = __dadd_rn(C13, __dmul_rn(s2, C15));
    p = __dadd_rn(C11, __dmul_rn(s2, p));
    p = __dadd_rn(C9, __dmul_rn(s2, p));
    p = __dadd_rn(C7, __dmul_rn(s2, p));
    p = __dadd_rn(C5, __dmul_rn(s2, p));
    p = __dadd_rn(C3, __dmul_rn(s2, p));
    p = __dadd_rn(1.0, __dmul_rn(s2, p));
    return __dadd_rn(__dmul_rn(__dmul_rn(2.0, s), p), __dmul_rn((double)e, LN_2));
}

// ---- order-preserving keys (crates/kcap/src/cap.rs) ------------------------

// cap::order_key: unsigned order of the result = f32 total order.
__device__ __forceinline__ u32 kcap_key_f32(u32 b) {
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

// The same for the 16 bits of an IEEE half (total order of f16, which is the
// total order of its exact f32 conversion).
__device__ __forceinline__ u32 kcap_key_f16(u32 h) {
    return (h & 0x8000u) ? (~h & 0xffffu) : (h | 0x8000u);
}

// x >> s for s in [0, 64] (a shift by 64 is undefined in C++).
__device__ __forceinline__ u64 kcap_shr(u64 x, u32 s) {
    return s >= 64 ? 0ULL : (x >> s);
}
