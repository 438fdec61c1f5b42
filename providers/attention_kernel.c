/* Attention of the embedded model's decode and verify steps over a float32 KV cache, row by row.

   skillweave compiles this file with the system C compiler at first use (providers/native.py) and calls it
   through ctypes; it includes no torch header. For each row b and key/value head g, the row's fed positions
   (count of them, the first at position pos) and the query heads that share g read each cached key and value
   column of the row once for all of them, in blocks of columns that stay in the L1 cache: query j of the row
   sees the columns [0, pos + j + 1). The softmax runs in float32 with the maximum subtracted. Every query's
   result is computed by the same instructions whatever the other rows and queries are, so a row's result does
   not depend on the batch, nor on how many positions it feeds in the step.

   Layouts, all float32, strides in elements, the last dimension contiguous:
     q    [n, heads, dim]            query n = row b's j-th fed position, rows one after another
     k, v [rows, kv heads, columns, dim]
     out  [n, heads, dim]            contiguous
     rows [rows, 3] int64            (first query index, count, position of the first fed token)        */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SW_ABI 1
#define BLOCK 64  /* columns per block: 64 keys of dim 64 are 16 KiB */

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef int32_t i8v __attribute__((vector_size(32)));

int sw_abi(void) { return SW_ABI; }

static inline v8 load8(const float *p) { return *(const v8u *)p; }
static inline void store8(float *p, v8 x) { *(v8u *)p = x; }
static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }

static inline v8 select8(i8v mask, v8 a, v8 b) { return (v8)((mask & (i8v)a) | (~mask & (i8v)b)); }

static inline float hsum8(v8 x) {  /* ((x0 + x4) + (x2 + x6)) + ((x1 + x5) + (x3 + x7)), a fixed order */
    float a = x[0] + x[4], b = x[1] + x[5], c = x[2] + x[6], d = x[3] + x[7];
    return (a + c) + (b + d);
}

static inline float hmax8(v8 x) {
    float m = x[0];
    for (int i = 1; i < 8; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (i8v){__VA_ARGS__})
#endif

/* [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7] */
static inline v8 hadd8(v8 a, v8 b) {
    return SHUFFLE(a, b, 0, 2, 8, 10, 4, 6, 12, 14) + SHUFFLE(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

/* The dot products of query q with 8 key columns (cols[t]: column t's dim floats), one vector of 8 scores. Each
   column's products are summed chunk by chunk in d order (8 lanes), then its lanes as
   ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): the same operations for every column and query. */
static inline __attribute__((always_inline)) v8 tile8(const v8 *q, const float *const *cols, int dim) {
    v8 a[8];
    for (int t = 0; t < 8; t++) a[t] = q[0] * load8(cols[t]);
    for (int d = 8; d < dim; d += 8)
        for (int t = 0; t < 8; t++) a[t] += q[d / 8] * load8(cols[t] + d);
    v8 u0 = hadd8(hadd8(a[0], a[1]), hadd8(a[2], a[3]));
    v8 u1 = hadd8(hadd8(a[4], a[5]), hadd8(a[6], a[7]));
    return SHUFFLE(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) + SHUFFLE(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* a query's scores for the columns [c0, e) in tiles of 8 (columns at or past `length` read zeros; those at or
   past `limit`, the query's own end, score -inf); returns the elementwise maximum of `m` and the scores */
static inline __attribute__((always_inline)) v8 scores(const float *qs, int dim, const float *K, long ksc,
                                                       long c0, long e, long length, long limit,
                                                       const float *zeros, float *s, v8 m) {
    v8 q[dim / 8];
    for (int d = 0; d < dim; d += 8) q[d / 8] = load8(qs + d);
    for (long c = c0; c < e; c += 8) {
        const float *cols[8];
        for (int t = 0; t < 8; t++) cols[t] = c + t < length ? K + (c + t) * ksc : zeros;
        v8 x = tile8(q, cols, dim);
        if (c + 8 > limit) {
            const i8v lane = {0, 1, 2, 3, 4, 5, 6, 7};
            x = select8(lane + (int)(c - limit) >= 0, splat(-INFINITY), x);
        }
        store8(s + c, x);
        m = select8(x > m, x, m);
    }
    return m;
}

/* exp(x) for x <= 0 (Cephes' single-precision polynomial, about 1 ulp; n rounded to nearest by adding 1.5 * 2^23);
   0 below -87.3 and for -inf */
static inline v8 exp8(v8 x) {
    const v8 lo = splat(-87.33654f), magic = splat(12582912.0f);
    i8v tiny = x < lo;
    x = select8(tiny, lo, x);
    v8 t = x * splat(1.44269504088896341f) + magic;  /* n + 1.5 * 2^23: n in the low bits */
    v8 fn = t - magic;
    x = x - fn * splat(0.693359375f);
    x = x - fn * splat(-2.12194440e-4f);
    v8 y = splat(1.9875691500e-4f);
    y = y * x + splat(1.3981999507e-3f);
    y = y * x + splat(8.3334519073e-3f);
    y = y * x + splat(4.1665795894e-2f);
    y = y * x + splat(1.6666665459e-1f);
    y = y * x + splat(5.0000001201e-1f);
    y = y * (x * x) + x + splat(1.0f);
    y = y * (v8)(((i8v)t << 23) + (127 << 23));  /* 2^n */
    return select8(tiny, splat(0.0f), y);
}

/* One row and key/value head: nq queries (query i = fed position i / group, head i % group of the group) */
static void one_group(int nq, int group, int dim, long pos, const float *Q, const float *K, long ksc,
                      const float *V, long vsc, float *S, long lds, float *A, float *sums, const float *zeros,
                      v8 *M) {
    long length = pos + (nq - 1) / group + 1;
    /* M: each query's running maximum, lane by lane */
    for (int i = 0; i < nq; i++) M[i] = splat(-INFINITY);
    /* scores, block by block of columns: a block's keys are read from memory once, then from L1 */
    for (long c0 = 0; c0 < length; c0 += BLOCK) {
        long c1 = c0 + BLOCK < length ? c0 + BLOCK : length;
        for (int i = 0; i < nq; i++) {
            long limit = pos + i / group + 1, e = c1 < limit ? c1 : limit;
            const float *q = Q + (long)i * dim;
            float *s = S + i * lds;
            if (dim == 64)
                M[i] = scores(q, 64, K, ksc, c0, e, length, limit, zeros, s, M[i]);
            else
                M[i] = scores(q, dim, K, ksc, c0, e, length, limit, zeros, s, M[i]);
        }
    }
    /* softmax numerators: exp(s - max); the columns past the query's end (-inf) give 0 */
    for (int i = 0; i < nq; i++) {
        long limit = pos + i / group + 1;
        float *s = S + i * lds;
        v8 mx = splat(hmax8(M[i])), sum = splat(0.0f);
        for (long c = 0; c < limit; c += 8) {
            v8 p = exp8(load8(s + c) - mx);
            store8(s + c, p);
            sum += p;
        }
        sums[i] = hsum8(sum);
        memset(A + (long)i * dim, 0, sizeof(float) * dim);
    }
    /* weighted values, block by block: acc += p[c] * v[c] in column order */
    for (long c0 = 0; c0 < length; c0 += BLOCK) {
        long c1 = c0 + BLOCK < length ? c0 + BLOCK : length;
        for (int i = 0; i < nq; i++) {
            long limit = pos + i / group + 1, e = c1 < limit ? c1 : limit;
            const float *s = S + i * lds;
            float *a = A + (long)i * dim;
            if (dim == 64) {  /* the embedded model: the accumulator in registers */
                v8 a0 = load8(a), a1 = load8(a + 8), a2 = load8(a + 16), a3 = load8(a + 24);
                v8 a4 = load8(a + 32), a5 = load8(a + 40), a6 = load8(a + 48), a7 = load8(a + 56);
                for (long c = c0; c < e; c++) {
                    const float *v = V + c * vsc;
                    v8 p = splat(s[c]);
                    a0 += p * load8(v); a1 += p * load8(v + 8); a2 += p * load8(v + 16); a3 += p * load8(v + 24);
                    a4 += p * load8(v + 32); a5 += p * load8(v + 40); a6 += p * load8(v + 48); a7 += p * load8(v + 56);
                }
                store8(a, a0); store8(a + 8, a1); store8(a + 16, a2); store8(a + 24, a3);
                store8(a + 32, a4); store8(a + 40, a5); store8(a + 48, a6); store8(a + 56, a7);
            } else {
                for (long c = c0; c < e; c++) {
                    const float *v = V + c * vsc;
                    v8 p = splat(s[c]);
                    for (int d = 0; d < dim; d += 8) store8(a + d, load8(a + d) + p * load8(v + d));
                }
            }
        }
    }
}

/* Returns 0, or -1 for a head dimension that is not a multiple of 8 or heads not a multiple of kv heads, -2 when
   memory runs out (the caller then uses torch). */
int sw_attention(long nrows, const int64_t *rows, const float *q, long qsn, long qsh, const float *k, long ksb,
                 long ksg, long ksc, const float *v, long vsb, long vsg, long vsc, float *out, int heads,
                 int kv_heads, int dim, float scale) {
    if (dim % 8 || dim <= 0 || kv_heads <= 0 || heads % kv_heads) return -1;
    int group = heads / kv_heads;
    long most = 0, longest = 0;
    for (long b = 0; b < nrows; b++) {
        long count = rows[3 * b + 1], end = rows[3 * b + 2] + count;
        most = count > most ? count : most;
        longest = end > longest ? end : longest;
    }
    if (!most) return 0;
    long lds = (longest + 7) & ~7L;  /* a query's scores, padded to a multiple of 8 columns */
    long nq = most * group;
    float *S = aligned_alloc(64, sizeof(float) * (size_t)((nq * lds + 15) & ~15L));
    float *Q = aligned_alloc(64, sizeof(float) * (size_t)((nq * dim + 15) & ~15L));
    float *A = aligned_alloc(64, sizeof(float) * (size_t)((nq * dim + 15) & ~15L));
    float *sums = aligned_alloc(64, sizeof(float) * (size_t)((nq + 15) & ~15L));
    v8 *M = aligned_alloc(64, sizeof(v8) * (size_t)((nq + 1) & ~1L));  /* on the heap: a prefill has many queries */
    float *zeros = calloc((size_t)dim, sizeof(float));
    if (!S || !Q || !A || !sums || !zeros || !M) {
        free(S); free(Q); free(A); free(sums); free(zeros); free(M);
        return -2;
    }
    for (long b = 0; b < nrows; b++) {
        long first = rows[3 * b], count = rows[3 * b + 1], pos = rows[3 * b + 2];
        for (int g = 0; g < kv_heads; g++) {
            int n = (int)count * group;
            for (int i = 0; i < n; i++) {  /* the group's queries, scaled, side by side */
                const float *src = q + (first + i / group) * qsn + (long)(g * group + i % group) * qsh;
                for (int d = 0; d < dim; d++) Q[(long)i * dim + d] = src[d] * scale;
            }
            one_group(n, group, dim, pos, Q, k + b * ksb + g * ksg, ksc, v + b * vsb + g * vsg, vsc, S, lds, A, sums,
                      zeros, M);
            for (int i = 0; i < n; i++) {
                float *o = out + ((first + i / group) * heads + g * group + i % group) * (long)dim;
                float total = sums[i];
                for (int d = 0; d < dim; d++) o[d] = A[(long)i * dim + d] / total;
            }
        }
    }
    free(S); free(Q); free(A); free(sums); free(zeros); free(M);
    return 0;
}
