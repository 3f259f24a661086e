/* Deep LoFi Beats: the fused LSTM generation kernel behind lofibeats.generation.engine.
 *
 * One call runs a whole chunk: `lofi_decode` runs the autoregressive loop (LSTM stack, output head, sampling)
 * for `steps` samples of `batch` streams, `lofi_frames` the two-tier loop of a frame model
 * (one LSTM step per frame of k samples, then k steps of the small sample-level tier), and
 * `lofi_render` the plan family's renderer (three small matrix products and a draw per sample).
 * Python prepares every weight (fused and packed) and every random draw, so the loop does no
 * allocation per step and no Python at all.
 *
 * Weights arrive folded (see fused.py): layer 0's input embedding, input projection and both
 * biases are one row per input class (mu-law) or slope * x + base (regression); layer l > 0
 * holds [W_ih; W_hh]^T (K = 2H rows) so one pass over its panels covers input and recurrence.
 * Matrices are stored in panels of LOFI_NB columns, each panel K rows of LOFI_NB contiguous
 * floats, so the inner loop streams memory and keeps a LOFI_RB x LOFI_NB tile in registers.
 *
 * A sample-level decode's and encode's LSTM and head panels may hold IEEE half floats instead
 * (`half`): a step then streams half the bytes, widening each weight to float32 as it is loaded
 * (F16C where the target has it, plain C otherwise), and sums in float32 as before.
 *
 * Plain C99 that needs nothing beyond the C library: built with -O3 -march=native by gcc/clang
 * (which get GCC vector extensions for the register tiles and auto-vectorise the rest), or by
 * MSVC (plain loops, as -DLOFI_PORTABLE builds them; they sum in the same order). The build
 * helper is kernel.py; the ABI number below must match it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define LOFI_API __declspec(dllexport)
#define LOFI_INLINE static __forceinline
#define LOFI_RESTRICT __restrict
#else
#define LOFI_API __attribute__((visibility("default")))
#define LOFI_INLINE static inline __attribute__((always_inline))
#define LOFI_RESTRICT restrict
#endif

#define LOFI_NB 16 /* columns per weight panel */
#define LOFI_RB 6  /* rows per register tile (6 x 16 floats: 12 of 16 AVX registers) */
#define LOFI_ABI 8 /* bumped whenever a struct or signature below changes */
#define LOFI_RECALL 32 /* samples a lookback recalls per frame (lookback.RECALL_SAMPLES) */
#define LOFI_LOCAL 64  /* samples of its local match (lookback.LOCAL_SAMPLES) */

enum { LOFI_OK = 0, LOFI_NO_MEMORY = 1, LOFI_BAD_ARGS = 2 };

typedef struct {
    int32_t layers;
    int32_t hidden;    /* H */
    int32_t n_gates;   /* 4H rounded up to a multiple of LOFI_NB */
    int32_t n_classes; /* > 0: token inputs use `table`; 0: float inputs use slope/base */
    int32_t half;      /* != 0: `weights` hold IEEE half floats (sample-level decode, encode) */
    const float *table;          /* [n_classes, n_gates] layer-0 gates per input class */
    const float *slope;          /* [n_gates] layer-0 gates = slope * x + base (regression) */
    const float *base;           /* [n_gates] */
    const void *const *weights;  /* [layers] panels: layer 0 K = H, layer l > 0 K = 2H */
    const float *const *bias;    /* [layers] [n_gates]; bias[0] unused (folded into layer 0) */
} LofiLSTM;

typedef struct {
    int32_t n_out;        /* classes (mu-law) or 1 (regression: tanh of one value) */
    int32_t n_pad;        /* n_out rounded up to LOFI_NB (mu-law) */
    int32_t half;         /* != 0: mu-law panels of IEEE half floats */
    const void *weights;  /* mu-law: panels with K = H; regression: [H] float32 */
    const float *bias;    /* mu-law: [n_pad]; regression: [1] */
} LofiHead;

/* The sample-level tier of a frame model, folded as frame_tier.FrameSampler folds it: a drawn
 * sample adds its window contribution (a [k, M] table row per class, or x * slope + offset) to
 * the pre-activations of the next k positions. A lookback model (recall > 0, mu-law only) also
 * feeds each frame's recall to the frame LSTM and the upsampling, and mixes its recalled samples
 * into each draw with the copy head (frame_tier.FoldedCopy). */
typedef struct {
    int32_t frame_size;         /* k */
    int32_t width;              /* M: sample_hidden */
    int32_t n_out;              /* classes (mu-law) or 1 (regression) */
    int32_t n_pad;              /* n_out rounded up to LOFI_NB (mu-law); 1 (regression) */
    int32_t n_up;               /* k * M rounded up to LOFI_NB */
    const float *frame_values;  /* mu-law: [n_out] frame-LSTM input value per class */
    const float *upsample;      /* panels with K = H, N = n_up: h -> k * M pre-activations */
    const float *window_bias;   /* [M] */
    const float *table;         /* mu-law: [n_out, k, M], row d - 1 for lag d */
    const float *slope;         /* regression: [k, M] */
    const float *offset;        /* regression: [k, M] */
    const float *out_weight;    /* mu-law: panels with K = M, N = n_pad; regression: [M] */
    const float *out_bias;      /* mu-law: [n_pad]; regression: [1] */
    int32_t recall;             /* R: recall values per frame (LOFI_RECALL + 2), 0: no lookback */
    float gate_bias;            /* copy head: g = sigmoid(act . gate_weight + gate_bias) */
    float copy_width;           /* copy head: the width of its bump, in class values */
    const float *gate_weight;   /* copy head: [M] */
    const float *levels;        /* copy head: [n_out] the class values the bump is over */
} LofiFrameTier;

/* One hop of a lookback decode: the sample values (`signal`, generated samples written into it
 * from `end` on) and the lag and score of the hop's search, per stream. */
typedef struct {
    float *signal;        /* [batch, stride] */
    int64_t stride;
    int64_t end;          /* where the call's first frame starts */
    const int64_t *lags;  /* [batch], in samples */
    const float *scores;  /* [batch] */
    float loop_stay;      /* Sampling.loop: log(1 - loop) (0 without a loop) */
    float loop_log;       /* log(loop) (-inf without a loop) */
} LofiRecall;

LOFI_API int lofi_abi(void) { return LOFI_ABI; }

/* ------------------------------------------------------------------ matrix products */

/* Weight panels hold float32, or IEEE half floats (`half` != 0: LofiLSTM.half, LofiHead.half)
 * that are widened to float32 as they are loaded, so every product still multiplies and sums
 * in float32: half weights halve the bytes a step streams, not the precision of the sums. */

/* The float32 value of the IEEE half `h` (exact: every half is a float). */
LOFI_INLINE float half_to_float(const uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) { /* inf, NaN */
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent) { /* normal: re-bias the exponent by 127 - 15 */
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else { /* zero or subnormal: mantissa * 2^-24 */
        const float value = (float)mantissa * 5.9604644775390625e-8f;
        memcpy(&bits, &value, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Element i of a panel (float32 or half). */
LOFI_INLINE float weight1(const void *w, const size_t i, const int half) {
    return half ? half_to_float(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* Where element i of a panel array starts. */
LOFI_INLINE const void *weight_at(const void *w, const size_t i, const int half) {
    return (const char *)w + i * (half ? sizeof(uint16_t) : sizeof(float));
}

/* y[r, 0:NB] += x[r, 0:kn] @ w[0:kn, 0:NB] for r < rb, w one panel slice. `ks` splits k into
 * interleaved partial sums so that rb * ks (<= LOFI_RB) independent accumulator rows hide the
 * FMA latency when there are few rows.
 * gcc/clang get explicit 8-float vectors (auto-vectorisation picks the wrong loop here), half
 * weights widened by F16C where the target has it; other compilers (or -DLOFI_PORTABLE) get
 * the same loops on scalars, which sum in the same order. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(LOFI_PORTABLE)
#if defined(__F16C__)
#include <immintrin.h>
#endif
typedef float vec8 __attribute__((vector_size(32)));
#define LOFI_NV (LOFI_NB / 8)

LOFI_INLINE vec8 load8(const float *p) {
    vec8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Elements i .. i + 7 of a panel as floats. */
LOFI_INLINE vec8 weight8(const void *w, const size_t i, const int half) {
    if (!half) return load8((const float *)w + i);
    const uint16_t *hw = (const uint16_t *)w + i;
#if defined(__F16C__)
    const __m256 wide = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)hw));
    vec8 v;
    memcpy(&v, &wide, sizeof v);
    return v;
#else
    vec8 v;
    for (int j = 0; j < 8; j++) v[j] = half_to_float(hw[j]);
    return v;
#endif
}

LOFI_INLINE void tile(const int rb, const int ks, const float *x, const int ldx, const int kn,
                      const void *w, const int half, float *y, const int ldy) {
    vec8 acc[LOFI_RB][LOFI_NV];
    for (int a = 0; a < rb * ks; a++)
        for (int v = 0; v < LOFI_NV; v++) acc[a][v] = (vec8){0};
    int k = 0;
    for (; k + ks <= kn; k += ks) {
        for (int q = 0; q < ks; q++) {
            const size_t wk = (size_t)(k + q) * LOFI_NB;
            vec8 wv[LOFI_NV];
            for (int v = 0; v < LOFI_NV; v++) wv[v] = weight8(w, wk + 8 * v, half);
            for (int r = 0; r < rb; r++) {
                const float xv = x[(size_t)r * ldx + k + q];
                for (int v = 0; v < LOFI_NV; v++) acc[r * ks + q][v] += xv * wv[v];
            }
        }
    }
    for (; k < kn; k++) {
        const size_t wk = (size_t)k * LOFI_NB;
        for (int r = 0; r < rb; r++) {
            const float xv = x[(size_t)r * ldx + k];
            for (int v = 0; v < LOFI_NV; v++) acc[r * ks][v] += xv * weight8(w, wk + 8 * v, half);
        }
    }
    for (int r = 0; r < rb; r++) {
        float *yr = y + (size_t)r * ldy;
        for (int v = 0; v < LOFI_NV; v++) {
            vec8 s = acc[r * ks][v];
            for (int q = 1; q < ks; q++) s += acc[r * ks + q][v];
            s += load8(yr + 8 * v);
            memcpy(yr + 8 * v, &s, sizeof s);
        }
    }
}

/* y[0:4 NB] += x[0:kn] @ four consecutive panels (w: the first, at its row k0; `stride`
 * elements from one panel to the next): one row, as one stream's step has. Each broadcast of x
 * feeds all four panels and two k run in separate accumulators, so loads rather than FMA
 * latency bound it (about 1.25x the single-panel tile's speed on a 2 x 256 LSTM). */
LOFI_INLINE void vector_panels4(const float *x, const int kn, const void *w, const int half,
                                const size_t stride, float *y) {
    vec8 a[2][4][LOFI_NV];
    for (int q = 0; q < 2; q++)
        for (int p = 0; p < 4; p++)
            for (int v = 0; v < LOFI_NV; v++) a[q][p][v] = (vec8){0};
    int k = 0;
    for (; k + 2 <= kn; k += 2)
        for (int q = 0; q < 2; q++) {
            const float xv = x[k + q];
            for (int p = 0; p < 4; p++) {
                const size_t wk = p * stride + (size_t)(k + q) * LOFI_NB;
                for (int v = 0; v < LOFI_NV; v++) a[q][p][v] += xv * weight8(w, wk + 8 * v, half);
            }
        }
    for (; k < kn; k++)
        for (int p = 0; p < 4; p++) {
            const size_t wk = p * stride + (size_t)k * LOFI_NB;
            for (int v = 0; v < LOFI_NV; v++) a[0][p][v] += x[k] * weight8(w, wk + 8 * v, half);
        }
    for (int p = 0; p < 4; p++)
        for (int v = 0; v < LOFI_NV; v++) {
            vec8 s = a[0][p][v] + a[1][p][v];
            s += load8(y + p * LOFI_NB + 8 * v);
            memcpy(y + p * LOFI_NB + 8 * v, &s, sizeof s);
        }
}
#else
LOFI_INLINE void tile(const int rb, const int ks, const float *x, const int ldx, const int kn,
                      const void *w, const int half, float *y, const int ldy) {
    float acc[LOFI_RB][LOFI_NB];
    for (int a = 0; a < rb * ks; a++)
        for (int j = 0; j < LOFI_NB; j++) acc[a][j] = 0.0f;
    int k = 0;
    for (; k + ks <= kn; k += ks) {
        for (int q = 0; q < ks; q++) {
            const size_t wk = (size_t)(k + q) * LOFI_NB;
            for (int r = 0; r < rb; r++) {
                const float xv = x[(size_t)r * ldx + k + q];
                for (int j = 0; j < LOFI_NB; j++) acc[r * ks + q][j] += xv * weight1(w, wk + j, half);
            }
        }
    }
    for (; k < kn; k++) {
        const size_t wk = (size_t)k * LOFI_NB;
        for (int r = 0; r < rb; r++) {
            const float xv = x[(size_t)r * ldx + k];
            for (int j = 0; j < LOFI_NB; j++) acc[r * ks][j] += xv * weight1(w, wk + j, half);
        }
    }
    for (int r = 0; r < rb; r++) {
        float *yr = y + (size_t)r * ldy;
        for (int j = 0; j < LOFI_NB; j++) {
            float s = acc[r * ks][j];
            for (int q = 1; q < ks; q++) s += acc[r * ks + q][j];
            yr[j] += s;
        }
    }
}

/* The vector path's vector_panels4 on scalars: the same products summed in the same order. */
LOFI_INLINE void vector_panels4(const float *x, const int kn, const void *w, const int half,
                                const size_t stride, float *y) {
    float a[2][4][LOFI_NB];
    for (int q = 0; q < 2; q++)
        for (int p = 0; p < 4; p++)
            for (int j = 0; j < LOFI_NB; j++) a[q][p][j] = 0.0f;
    int k = 0;
    for (; k + 2 <= kn; k += 2)
        for (int q = 0; q < 2; q++)
            for (int p = 0; p < 4; p++) {
                const size_t wk = p * stride + (size_t)(k + q) * LOFI_NB;
                for (int j = 0; j < LOFI_NB; j++) a[q][p][j] += x[k + q] * weight1(w, wk + j, half);
            }
    for (; k < kn; k++)
        for (int p = 0; p < 4; p++) {
            const size_t wk = p * stride + (size_t)k * LOFI_NB;
            for (int j = 0; j < LOFI_NB; j++) a[0][p][j] += x[k] * weight1(w, wk + j, half);
        }
    for (int p = 0; p < 4; p++)
        for (int j = 0; j < LOFI_NB; j++) y[p * LOFI_NB + j] += a[0][p][j] + a[1][p][j];
}
#endif

/* y[r, :n] += x[r, :kn] @ W[k0:k0 + kn, :n] for r < rows; W is packed as n / NB panels of
 * k_total rows each, float32 or (`half`) IEEE half. Panel-outer order keeps one panel hot
 * while every row tile uses it. */
LOFI_INLINE void matmul_any(const int rows, const float *x, const int ldx, const void *panels,
                            const int half, const int k_total, const int k0, const int kn,
                            float *y, const int ldy, const int n) {
    int first = 0;
    if (rows == 1) {
        const size_t stride = (size_t)k_total * LOFI_NB;
        for (; first + 4 <= n / LOFI_NB; first += 4)
            vector_panels4(x, kn, weight_at(panels, first * stride + (size_t)k0 * LOFI_NB, half),
                           half, stride, y + (size_t)first * LOFI_NB);
    }
    for (int p = first; p < n / LOFI_NB; p++) {
        const void *w = weight_at(panels, ((size_t)p * k_total + k0) * LOFI_NB, half);
        float *yp = y + (size_t)p * LOFI_NB;
        int r = 0;
        for (; r + LOFI_RB <= rows; r += LOFI_RB)
            tile(LOFI_RB, 1, x + (size_t)r * ldx, ldx, kn, w, half, yp + (size_t)r * ldy, ldy);
        const float *xr = x + (size_t)r * ldx;
        float *yr = yp + (size_t)r * ldy;
        switch (rows - r) {
        case 5: tile(5, 1, xr, ldx, kn, w, half, yr, ldy); break;
        case 4: tile(4, 1, xr, ldx, kn, w, half, yr, ldy); break;
        case 3: tile(3, 2, xr, ldx, kn, w, half, yr, ldy); break;
        case 2: tile(2, 3, xr, ldx, kn, w, half, yr, ldy); break;
        case 1: tile(1, 4, xr, ldx, kn, w, half, yr, ldy); break;
        default: break;
        }
    }
}

/* matmul_any on float32 panels, and on half ones: two copies, each with its loads fixed. */
static void matmul_acc(const int rows, const float *x, const int ldx, const float *panels,
                       const int k_total, const int k0, const int kn, float *y, const int ldy,
                       const int n) {
    matmul_any(rows, x, ldx, panels, 0, k_total, k0, kn, y, ldy, n);
}

static void matmul_half(const int rows, const float *x, const int ldx, const uint16_t *panels,
                        const int k_total, const int k0, const int kn, float *y, const int ldy,
                        const int n) {
    matmul_any(rows, x, ldx, panels, 1, k_total, k0, kn, y, ldy, n);
}

/* y += x @ W for a matrix of a LofiLSTM or LofiHead (`half` says how its panels are stored). */
static void matmul_weights(const int rows, const float *x, const int ldx, const void *panels,
                           const int half, const int k_total, const int k0, const int kn,
                           float *y, const int ldy, const int n) {
    if (half) matmul_half(rows, x, ldx, panels, k_total, k0, kn, y, ldy, n);
    else matmul_acc(rows, x, ldx, panels, k_total, k0, kn, y, ldy, n);
}

/* ------------------------------------------------------------------ elementwise math */

/* exp(x) to about 2 ulp (Cephes expf): round-to-nearest range reduction by ln 2, a degree-7
 * polynomial, and 2^n built in the exponent bits. Branch-free, so loops over it vectorise
 * (libm's expf does not without -ffast-math, and these calls dominate the cell update). */
LOFI_INLINE float fast_exp(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float t = x * 1.44269504088896341f + magic;
    const float n = t - magic;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    const float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t scale_bits = (int32_t)((uint32_t)(bits - 0x4B400000 + 127) << 23);
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

LOFI_INLINE float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

LOFI_INLINE float fast_tanh(float x) { return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f; }

/* The LSTM cell for `rows` rows: gates [rows, n_gates] in PyTorch order (i, f, g, o). */
static void lstm_cell(const int rows, const int hidden, const int n_gates,
                      const float *LOFI_RESTRICT gates, float *LOFI_RESTRICT c,
                      float *LOFI_RESTRICT h) {
    for (int r = 0; r < rows; r++) {
        const float *g = gates + (size_t)r * n_gates;
        float *cr = c + (size_t)r * hidden;
        float *hr = h + (size_t)r * hidden;
        for (int j = 0; j < hidden; j++) {
            const float in = sigmoid(g[j]);
            const float forget = sigmoid(g[hidden + j]);
            const float cell = fast_tanh(g[2 * hidden + j]);
            const float out = sigmoid(g[3 * hidden + j]);
            const float cn = forget * cr[j] + in * cell;
            cr[j] = cn;
            hr[j] = out * fast_tanh(cn);
        }
    }
}

/* gates[r] = layer-0 input gates of step t for each row (token or float input). */
static void input_gates(const LofiLSTM *net, const int rows, const int64_t *classes,
                        const float *values, const int64_t stride, float *gates) {
    const int n = net->n_gates;
    for (int r = 0; r < rows; r++) {
        float *g = gates + (size_t)r * n;
        if (net->n_classes > 0) {
            memcpy(g, net->table + (size_t)classes[(size_t)r * stride] * n, sizeof(float) * n);
        } else {
            const float x = values[(size_t)r * stride];
            for (int j = 0; j < n; j++) g[j] = net->slope[j] * x + net->base[j];
        }
    }
}

static void fill_bias(const int rows, const int n, const float *bias, float *gates) {
    for (int r = 0; r < rows; r++) memcpy(gates + (size_t)r * n, bias, sizeof(float) * n);
}

static int valid_classes(const LofiLSTM *net, const int64_t *classes, const size_t count) {
    for (size_t i = 0; i < count; i++)
        if (classes[i] < 0 || classes[i] >= net->n_classes) return 0;
    return 1;
}

/* ------------------------------------------------------------------ encoder */

#ifndef LOFI_ENCODE_ROWS
#define LOFI_ENCODE_ROWS 64 /* block * batch rows of one input-projection product */
#endif

/* Run the stack over known inputs [batch, steps] (classes, or values for float inputs) from
 * the state (h, c) [layers, batch, H], updated in place: what a stream's encoder does over a
 * block it has just generated (no head, no sampling). Time is cut into blocks; per block,
 * layer 0 steps through its recurrence, then each higher layer takes the whole block's input
 * projection as one matrix product (rows = block * batch) before its own recurrence, so only
 * the recurrent half of its weights is read per step. */
LOFI_API int lofi_encode(const LofiLSTM *net, const int32_t batch, const int32_t steps,
                         float *h, float *c, const int64_t *classes, const float *values) {
    const int L = net->layers, H = net->hidden, G = net->n_gates, B = batch;
    if (B < 1 || steps < 0 || L < 1) return LOFI_BAD_ARGS;
    if (steps == 0) return LOFI_OK;
    if ((net->n_classes > 0 && !classes) || (net->n_classes == 0 && !values)) return LOFI_BAD_ARGS;
    if (net->n_classes > 0 && !valid_classes(net, classes, (size_t)B * steps)) return LOFI_BAD_ARGS;
    const int per_block = B >= LOFI_ENCODE_ROWS ? 1 : LOFI_ENCODE_ROWS / B;
    const int block = per_block < steps ? per_block : steps;
    float *gates = malloc(sizeof(float) * (size_t)block * B * G);
    float *seq = malloc(sizeof(float) * (size_t)block * B * H);
    int status = LOFI_OK;
    if (!gates || !seq) {
        status = LOFI_NO_MEMORY;
        goto done;
    }
    for (int t0 = 0; t0 < steps; t0 += block) {
        const int tb = steps - t0 < block ? steps - t0 : block;
        for (int t = 0; t < tb; t++) { /* layer 0: a table row (or slope * x + base) + W_hh h */
            input_gates(net, B, classes ? classes + t0 + t : NULL, values ? values + t0 + t : NULL,
                        steps, gates);
            matmul_weights(B, h, H, net->weights[0], net->half, H, 0, H, gates, G, G);
            lstm_cell(B, H, G, gates, c, h);
            memcpy(seq + (size_t)t * B * H, h, sizeof(float) * B * H);
        }
        for (int l = 1; l < L; l++) {
            float *hl = h + (size_t)l * B * H, *cl = c + (size_t)l * B * H;
            fill_bias(tb * B, G, net->bias[l], gates);
            matmul_weights(tb * B, seq, H, net->weights[l], net->half, 2 * H, 0, H, gates, G, G);
            for (int t = 0; t < tb; t++) { /* seq[t] was read above: it takes this layer's h */
                float *gt = gates + (size_t)t * B * G;
                matmul_weights(B, hl, H, net->weights[l], net->half, 2 * H, H, H, gt, G, G);
                lstm_cell(B, H, G, gt, cl, hl);
                memcpy(seq + (size_t)t * B * H, hl, sizeof(float) * B * H);
            }
        }
    }
done:
    free(gates);
    free(seq);
    return status;
}

/* ------------------------------------------------------------------ sampling */

typedef struct {
    float p;
    int32_t index;
} Ranked;

static int by_probability(const void *a, const void *b) {
    const Ranked *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->index - y->index;
}

static int argmax(const float *v, const int n) {
    int best = 0;
    for (int j = 1; j < n; j++)
        if (v[j] > v[best]) best = j;
    return best;
}

/* Inverse-CDF draw from softmax(logits / temperature) with uniform u, as MulawHead.sample does:
 * the CDF accumulates in double and is stored as float, u is scaled by its last value, and the
 * class is the first whose CDF exceeds it. With top_p < 1 only the most likely classes whose
 * preceding mass is below top_p take part. `probs` and `ranked` are scratch of n floats. */
static int draw_class(const float *logits, const int n, const float temperature, const float top_p,
                      const float u, float *probs, Ranked *ranked) {
    float top = logits[0] / temperature;
    for (int j = 0; j < n; j++) {
        probs[j] = logits[j] / temperature;
        top = probs[j] > top ? probs[j] : top;
    }
    for (int j = 0; j < n; j++) probs[j] = fast_exp(probs[j] - top);
    double total = 0.0;
    for (int j = 0; j < n; j++) total += probs[j];
    const float inv = (float)(1.0 / total);
    for (int j = 0; j < n; j++) probs[j] *= inv;
    int kept = n;
    if (top_p < 1.0f) {
        for (int j = 0; j < n; j++) {
            ranked[j].p = probs[j];
            ranked[j].index = j;
        }
        qsort(ranked, (size_t)n, sizeof(Ranked), by_probability);
        double cum = 0.0;
        for (int j = 0; j < n; j++) {
            cum += ranked[j].p;
            if (!((float)cum - ranked[j].p < top_p)) {
                kept = j;
                break;
            }
            probs[j] = ranked[j].p;
        }
    }
    double cdf = 0.0;
    for (int j = 0; j < kept; j++) cdf += probs[j];
    const float target = u * (float)cdf;
    cdf = 0.0;
    int pick = kept - 1;
    for (int j = 0; j < kept; j++) {
        cdf += probs[j];
        if ((float)cdf > target) {
            pick = j;
            break;
        }
    }
    if (pick < 0) pick = 0;
    return top_p < 1.0f ? ranked[pick].index : pick;
}

/* ------------------------------------------------------------------ decoder */

/* Generate `steps` samples for each of `batch` streams from the state (h, c) [layers, batch, H],
 * updated in place, starting from the input tokens `first_class` / `first_value` [batch].
 *
 * cond: optional extra layer-0 gates added every step, cond[b * cond_b + t * cond_t + :n_gates]
 *   (cond_t = 0 for a constant conditioning vector), already multiplied by its weights.
 * draws [steps, batch]: uniforms in [0, 1) for mu-law, additive noise for regression; NULL or
 *   greedy != 0 decodes greedily (argmax / the mean).
 * Outputs [batch, steps]: classes (mu-law) or float samples in [-1, 1] (regression).
 */
LOFI_API int lofi_decode(const LofiLSTM *net, const LofiHead *head, const int32_t batch,
                         const int32_t steps, float *h, float *c, const int64_t *first_class,
                         const float *first_value, const float *cond, const int64_t cond_b,
                         const int64_t cond_t, const float *draws, const int32_t greedy,
                         const float temperature, const float top_p, int64_t *out_class,
                         float *out_value) {
    const int L = net->layers, H = net->hidden, G = net->n_gates, B = batch;
    const int mulaw = net->n_classes > 0;
    if (B < 1 || steps < 0 || L < 1) return LOFI_BAD_ARGS;
    if (steps == 0) return LOFI_OK;
    if ((mulaw && (!first_class || !out_class)) ||
        (!mulaw && (!first_value || !out_value)) || (mulaw && head->n_out != net->n_classes) ||
        (!mulaw && head->n_out != 1) || (!greedy && !draws) || (!greedy && !(temperature > 0.0f)) ||
        (!mulaw && head->half))
        return LOFI_BAD_ARGS;
    if (mulaw && !valid_classes(net, first_class, (size_t)B)) return LOFI_BAD_ARGS;
    const int V = head->n_out, VP = mulaw ? head->n_pad : 1, half = net->half;
    float *gates = malloc(sizeof(float) * (size_t)B * G);
    float *logits = malloc(sizeof(float) * (size_t)B * VP);
    float *probs = malloc(sizeof(float) * (size_t)V);
    Ranked *ranked = malloc(sizeof(Ranked) * (size_t)V);
    int64_t *tokens = malloc(sizeof(int64_t) * (size_t)B);
    float *values = malloc(sizeof(float) * (size_t)B);
    int status = LOFI_OK;
    if (!gates || !logits || !probs || !ranked || !tokens || !values) {
        status = LOFI_NO_MEMORY;
        goto done;
    }
    for (int b = 0; b < B; b++) {
        if (mulaw) tokens[b] = first_class[b];
        else values[b] = first_value[b];
    }
    const float *top_h = h + (size_t)(L - 1) * B * H;
    for (int t = 0; t < steps; t++) {
        input_gates(net, B, tokens, values, 1, gates);
        if (cond) {
            for (int b = 0; b < B; b++) {
                const float *cb = cond + b * cond_b + t * cond_t;
                float *g = gates + (size_t)b * G;
                for (int j = 0; j < G; j++) g[j] += cb[j];
            }
        }
        matmul_weights(B, h, H, net->weights[0], half, H, 0, H, gates, G, G);
        lstm_cell(B, H, G, gates, c, h);
        for (int l = 1; l < L; l++) {
            float *hl = h + (size_t)l * B * H, *cl = c + (size_t)l * B * H;
            const void *w = net->weights[l];
            fill_bias(B, G, net->bias[l], gates);
            if (B == 1) { /* [h_{l-1}; h_l] lie side by side: one pass over the stacked rows */
                matmul_weights(1, hl - H, 2 * H, w, half, 2 * H, 0, 2 * H, gates, G, G);
            } else {
                matmul_weights(B, hl - (size_t)B * H, H, w, half, 2 * H, 0, H, gates, G, G);
                matmul_weights(B, hl, H, w, half, 2 * H, H, H, gates, G, G);
            }
            lstm_cell(B, H, G, gates, cl, hl);
        }
        const float *u = draws ? draws + (size_t)t * B : NULL;
        if (mulaw) {
            fill_bias(B, VP, head->bias, logits);
            matmul_weights(B, top_h, H, head->weights, head->half, H, 0, H, logits, VP, VP);
            for (int b = 0; b < B; b++) {
                const float *lb = logits + (size_t)b * VP;
                tokens[b] = greedy ? argmax(lb, V)
                                   : draw_class(lb, V, temperature, top_p, u[b], probs, ranked);
                out_class[(size_t)b * steps + t] = tokens[b];
            }
        } else {
            for (int b = 0; b < B; b++) {
                const float *hb = top_h + (size_t)b * H;
                float dot = 0.0f;
                for (int j = 0; j < H; j++) dot += ((const float *)head->weights)[j] * hb[j];
                float v = tanhf(dot + head->bias[0]);
                if (!greedy) {
                    v += u[b];
                    v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
                }
                values[b] = v;
                out_value[(size_t)b * steps + t] = v;
            }
        }
    }
done:
    free(gates);
    free(logits);
    free(probs);
    free(ranked);
    free(tokens);
    free(values);
    return status;
}

/* ------------------------------------------------------------------ frame models */

/* One step of a stack whose layer 0 reads a float vector x [rows, n_in] through stacked
 * [W_ih; W_hh]^T panels (K = n_in + H) and bias[0]: the frame LSTM of a frame model. `cond`
 * (or NULL): extra layer-0 gates of each row, cond[r * cond_b + :n_gates]. */
static void frame_lstm_step(const LofiLSTM *net, const int rows, const int n_in, const float *x,
                            const float *cond, const int64_t cond_b, float *h, float *c,
                            float *gates) {
    const int L = net->layers, H = net->hidden, G = net->n_gates;
    const float *const *weights = (const float *const *)net->weights; /* float32 (lofi_frames) */
    fill_bias(rows, G, net->bias[0], gates);
    if (cond)
        for (int r = 0; r < rows; r++) {
            const float *cr = cond + r * cond_b;
            float *g = gates + (size_t)r * G;
            for (int j = 0; j < G; j++) g[j] += cr[j];
        }
    matmul_acc(rows, x, n_in, weights[0], n_in + H, 0, n_in, gates, G, G);
    matmul_acc(rows, h, H, weights[0], n_in + H, n_in, H, gates, G, G);
    lstm_cell(rows, H, G, gates, c, h);
    for (int l = 1; l < L; l++) {
        float *hl = h + (size_t)l * rows * H, *cl = c + (size_t)l * rows * H;
        fill_bias(rows, G, net->bias[l], gates);
        matmul_acc(rows, hl - (size_t)rows * H, H, weights[l], 2 * H, 0, H, gates, G, G);
        matmul_acc(rows, hl, H, weights[l], 2 * H, H, H, gates, G, G);
        lstm_cell(rows, H, G, gates, cl, hl);
    }
}

/* ------------------------------------------------------------------ lookback */

/* log(exp(x) + exp(y)) as NumPy's float32 logaddexp computes it. */
LOFI_INLINE float logaddexp(const float x, const float y) {
    if (x == y) return x + 0.693147180559945309f;
    const float d = x - y;
    if (d > 0) return x + log1pf(expf(-d));
    if (d <= 0) return y + log1pf(expf(d));
    return d; /* NaN */
}

/* log(sum(exp(x))) over n values. */
static float logsumexp(const float *x, const int n) {
    float top = x[0];
    for (int j = 1; j < n; j++) top = x[j] > top ? x[j] : top;
    double total = 0.0;
    for (int j = 0; j < n; j++) total += expf(x[j] - top);
    return top + logf((float)total);
}

/* r[0:R] = the recall of stream b's frame at sample `at`: the LOFI_RECALL samples from
 * `at - lag`, the search's score, the cosine of the LOFI_LOCAL samples before `at` and before
 * `at - lag` (0 where either is silent), as lookback.Lookback.recall_at computes it. */
static void recall_frame(const LofiRecall *look, const int b, const int64_t at, float *r) {
    const float *s = look->signal + (size_t)b * look->stride;
    const int64_t from = at - look->lags[b];
    for (int i = 0; i < LOFI_RECALL; i++) r[i] = s[from + i];
    float dot = 0.0f, now = 0.0f, then = 0.0f;
    for (int i = -LOFI_LOCAL; i < 0; i++) {
        dot += s[at + i] * s[from + i];
        now += s[at + i] * s[at + i];
        then += s[from + i] * s[from + i];
    }
    r[LOFI_RECALL] = look->scores[b];
    r[LOFI_RECALL + 1] = dot * (1.0f / sqrtf(now * then + 1e-8f));
}

/* copy[0:V] = log_softmax(-|levels - centre| / width): the copy head's bump on a recalled
 * value (FoldedCopy.copies). */
static void copy_logprobs(const LofiFrameTier *tier, const float centre, float *copy) {
    const int V = tier->n_out;
    for (int v = 0; v < V; v++) copy[v] = -fabsf(tier->levels[v] - centre) / tier->copy_width;
    const float norm = logsumexp(copy, V);
    for (int v = 0; v < V; v++) copy[v] -= norm;
}

/* mixed[0:V] = log p of the copy head's mixture (FoldedCopy.mix): `logits` [V] without the
 * output bias (overwritten), `act` [M] the sample tier's features, `copy` [V] copy_logprobs. */
static void copy_mix(const LofiFrameTier *tier, const LofiRecall *look, float *logits,
                     const float *act, const float *copy, float *mixed) {
    const int V = tier->n_out, M = tier->width;
    for (int v = 0; v < V; v++) logits[v] += tier->out_bias[v];
    const float norm = logsumexp(logits, V);
    float gate = 0.0f;
    for (int m = 0; m < M; m++) gate += act[m] * tier->gate_weight[m];
    gate += tier->gate_bias;
    const float keep = -logaddexp(0.0f, gate) + look->loop_stay; /* log(1 - g') */
    const float take = logaddexp(look->loop_log, -logaddexp(0.0f, -gate) + look->loop_stay);
    for (int v = 0; v < V; v++) mixed[v] = logaddexp(keep + (logits[v] - norm), take + copy[v]);
}

/* The copy head's log p for `rows` samples, for tests against FoldedCopy.mix: logits [rows, V]
 * without the output bias (overwritten), features act [rows, M], recalled values centres
 * [rows], Sampling.loop as in LofiRecall; out [rows, V]. */
LOFI_API int lofi_copy_mix(const LofiFrameTier *tier, const int32_t rows, float *logits,
                           const float *act, const float *centres, const float loop_stay,
                           const float loop_log, float *out) {
    if (rows < 0 || tier->recall == 0 || !tier->levels || !tier->gate_weight) return LOFI_BAD_ARGS;
    const int V = tier->n_out;
    float *copy = malloc(sizeof(float) * (size_t)V);
    if (!copy) return LOFI_NO_MEMORY;
    LofiRecall look = {NULL, 0, 0, NULL, NULL, loop_stay, loop_log};
    for (int r = 0; r < rows; r++) {
        copy_logprobs(tier, centres[r], copy);
        copy_mix(tier, &look, logits + (size_t)r * V, act + (size_t)r * tier->width, copy,
                 out + (size_t)r * V);
    }
    free(copy);
    return LOFI_OK;
}

/* Whether `look` can serve `frames` frames of `batch` streams: every lag within [LOFI_RECALL,
 * end - LOFI_LOCAL] and room for the frames in the signal. */
static int valid_recall(const LofiRecall *look, const int batch, const int64_t steps) {
    if (!look || !look->signal || !look->lags || !look->scores) return 0;
    if (look->end < LOFI_LOCAL || look->end + steps > look->stride) return 0;
    for (int b = 0; b < batch; b++)
        if (look->lags[b] < LOFI_RECALL || look->lags[b] > look->end - LOFI_LOCAL) return 0;
    return 1;
}

/* ahead[i, :] += the window contribution of one drawn sample at lag i + 1, i < k. */
static void add_contribution(const LofiFrameTier *tier, const int64_t cls, const float value,
                             float *LOFI_RESTRICT ahead) {
    const int n = tier->frame_size * tier->width;
    if (tier->table) {
        const float *row = tier->table + (size_t)cls * n;
        for (int i = 0; i < n; i++) ahead[i] += row[i];
    } else {
        for (int i = 0; i < n; i++) {
            const float part = value * tier->slope[i];
            ahead[i] += part + tier->offset[i];
        }
    }
}

/* A mu-law class from `logits` [V]: their argmax, or with a uniform `u` an inverse-CDF draw
 * (temperature, top_p). A lookback model (`logits` = act @ W without the bias) first mixes the
 * copy head in and then adds `offsets` (T * Gumbel noise, or zeros), which other models have
 * already added to their logits. */
static int64_t draw_frame_class(const LofiFrameTier *tier, const LofiRecall *look, float *logits,
                                const float *act, const float *copy, const float *offsets,
                                const float *u, const float temperature, const float top_p,
                                float *mixed, float *probs, Ranked *ranked) {
    const int V = tier->n_out;
    float *scores = logits;
    if (tier->recall) {
        copy_mix(tier, look, logits, act, copy, mixed);
        scores = mixed;
    }
    if (u) return draw_class(scores, V, temperature, top_p, *u, probs, ranked);
    if (offsets)
        for (int v = 0; v < V; v++) scores[v] += offsets[v];
    return argmax(scores, V);
}

/* Generate `frames` frames of k samples for each of `batch` streams: the frame LSTM `net`
 * (layer 0 as in frame_lstm_step; n_classes and table unused) from the state (h, c)
 * [layers, batch, H], updated in place, then per frame k sample-tier steps. The pre-activation
 * buffer and the order of every addition into it follow FrameSampler.generate, so only the
 * matrix products' summation order differs from it.
 *
 * context_class / context_value [batch, k]: the k tokens before the output (frame 0's input).
 * cond: optional extra layer-0 gates of the frame LSTM, cond[b * cond_b + j * cond_t + :n_gates]
 *   for frame j (cond_t = 0: the same every frame), already multiplied by its weights.
 * mu-law: logits = act @ W + offsets[t * off_t + b * off_b + :n_out] (the output bias, plus
 *   T * Gumbel noise when sampling: then argmax is an exact softmax draw); with nucleus != 0
 *   the class is drawn instead by inverse CDF (temperature, top_p) from the uniform
 *   draws[t * batch + b] with logits = act @ W + out_bias.
 * regression: tanh(act . w + bias), plus draws[t * batch + b] clamped to [-1, 1] unless draws
 *   is NULL (greedy).
 * look: a lookback model's hop (tier->recall > 0; NULL otherwise): each frame j recalls at
 *   sample end + j k of the signal, the frame LSTM reads [frame values, recall] and the
 *   upsampling [h, recall], the copy head mixes each draw (offsets without the output bias),
 *   and every drawn sample's value is written into the signal.
 * Outputs [batch, frames * k]: classes (mu-law) or float samples (regression). */
LOFI_API int lofi_frames(const LofiLSTM *net, const LofiFrameTier *tier, const int32_t batch,
                         const int32_t frames, float *h, float *c, const int64_t *context_class,
                         const float *context_value, const float *cond, const int64_t cond_b,
                         const int64_t cond_t, const float *offsets, const int64_t off_t,
                         const int64_t off_b, const float *draws, const int32_t nucleus,
                         const float temperature, const float top_p, const LofiRecall *look,
                         int64_t *out_class, float *out_value) {
    const int L = net->layers, H = net->hidden, B = batch, K = tier->frame_size;
    const int M = tier->width, V = tier->n_out, VP = tier->n_pad, NU = tier->n_up;
    const int R = tier->recall, NI = K + R; /* the frame LSTM's input width */
    const int mulaw = tier->table != NULL;
    if (B < 1 || frames < 0 || L < 1 || K < 1 || M < 1 || net->half) return LOFI_BAD_ARGS;
    if (frames == 0) return LOFI_OK;
    if ((mulaw && (!context_class || !out_class || !tier->frame_values)) ||
        (!mulaw && (!context_value || !out_value || V != 1)) ||
        (mulaw && !nucleus && !offsets) ||
        (mulaw && nucleus && (!draws || !(temperature > 0.0f))))
        return LOFI_BAD_ARGS;
    const int64_t steps = (int64_t)frames * K;
    if (R && (R != LOFI_RECALL + 2 || !mulaw || K > LOFI_RECALL || !tier->gate_weight ||
              !tier->levels || !valid_recall(look, B, steps)))
        return LOFI_BAD_ARGS;
    if (mulaw)
        for (size_t i = 0; i < (size_t)B * K; i++)
            if (context_class[i] < 0 || context_class[i] >= V) return LOFI_BAD_ARGS;
    const size_t span = (size_t)3 * K * M; /* per stream: positions [-k, 2k) around the frame */
    float *gates = malloc(sizeof(float) * (size_t)B * net->n_gates);
    float *x = malloc(sizeof(float) * (size_t)B * NI);
    float *up = malloc(sizeof(float) * (size_t)B * NU);
    float *buf = calloc((size_t)B * span, sizeof(float));
    float *act = malloc(sizeof(float) * (size_t)B * M);
    float *logits = malloc(sizeof(float) * (size_t)B * VP);
    float *probs = malloc(sizeof(float) * (size_t)V);
    Ranked *ranked = malloc(sizeof(Ranked) * (size_t)V);
    float *copies = malloc(sizeof(float) * (size_t)B * K * V); /* lookback: [B, k, V] */
    float *mixed = malloc(sizeof(float) * (size_t)V);
    int status = LOFI_OK;
    if (!gates || !x || !up || !buf || !act || !logits || !probs || !ranked || !copies || !mixed) {
        status = LOFI_NO_MEMORY;
        goto done;
    }
    for (int b = 0; b < B; b++) /* the context's contributions to the first frame */
        for (int s = 0; s < K; s++) {
            const size_t i = (size_t)b * K + s;
            add_contribution(tier, mulaw ? context_class[i] : 0, mulaw ? 0.0f : context_value[i],
                             buf + (size_t)b * span + (size_t)(s + 1) * M);
        }
    const float *top_h = h + (size_t)(L - 1) * B * H;
    for (int j = 0; j < frames; j++) {
        for (int b = 0; b < B; b++) /* the frame LSTM reads the previous frame's values */
            for (int i = 0; i < K; i++) {
                const size_t at = (size_t)b * steps + (size_t)(j - 1) * K + i;
                const size_t ctx = (size_t)b * K + i;
                float *xi = x + (size_t)b * NI + i;
                if (mulaw)
                    *xi = tier->frame_values[j ? out_class[at] : context_class[ctx]];
                else
                    *xi = j ? out_value[at] : context_value[ctx];
            }
        for (int b = 0; R && b < B; b++) { /* then the recall, and the copies it offers */
            float *rb = x + (size_t)b * NI + K;
            recall_frame(look, b, look->end + (int64_t)j * K, rb);
            for (int p = 0; p < K; p++)
                copy_logprobs(tier, rb[p], copies + ((size_t)b * K + p) * V);
        }
        frame_lstm_step(net, B, NI, x, cond ? cond + j * cond_t : NULL, cond_b, h, c, gates);
        memset(up, 0, sizeof(float) * (size_t)B * NU);
        matmul_acc(B, top_h, H, tier->upsample, H + R, 0, H, up, NU, NU);
        if (R) matmul_acc(B, x + K, NI, tier->upsample, H + R, H, R, up, NU, NU);
        for (int b = 0; b < B; b++) {
            float *pre = buf + (size_t)b * span + (size_t)K * M;
            const float *ub = up + (size_t)b * NU;
            for (int p = 0; p < K; p++)
                for (int m = 0; m < M; m++) {
                    const float frame = ub[p * M + m] + tier->window_bias[m];
                    pre[p * M + m] += frame;
                }
        }
        for (int p = 0; p < K; p++) {
            const int64_t t = (int64_t)j * K + p;
            for (int b = 0; b < B; b++) {
                const float *pre = buf + (size_t)b * span + (size_t)(K + p) * M;
                float *ab = act + (size_t)b * M;
                for (int m = 0; m < M; m++) ab[m] = pre[m] > 0.0f ? pre[m] : 0.0f;
            }
            if (mulaw) {
                for (int b = 0; b < B; b++) { /* the bias goes in here, or in the copy mix */
                    float *lb = logits + (size_t)b * VP;
                    if (R) memset(lb, 0, sizeof(float) * V);
                    else memcpy(lb, nucleus ? tier->out_bias : offsets + t * off_t + b * off_b,
                                sizeof(float) * V);
                }
                matmul_acc(B, act, M, tier->out_weight, M, 0, M, logits, VP, VP);
            }
            for (int b = 0; b < B; b++) {
                int64_t cls = 0;
                float value = 0.0f;
                if (mulaw) {
                    const float *offset = nucleus || !R ? NULL : offsets + t * off_t + b * off_b;
                    cls = draw_frame_class(tier, look, logits + (size_t)b * VP, act + (size_t)b * M,
                                           copies + ((size_t)b * K + p) * V, offset,
                                           nucleus ? draws + t * B + b : NULL, temperature, top_p,
                                           mixed, probs, ranked);
                    out_class[(size_t)b * steps + t] = cls;
                    if (R) look->signal[(size_t)b * look->stride + look->end + t] =
                        tier->frame_values[cls];
                } else {
                    const float *ab = act + (size_t)b * M;
                    float dot = 0.0f;
                    for (int m = 0; m < M; m++) dot += ab[m] * tier->out_weight[m];
                    value = tanhf(dot + tier->out_bias[0]);
                    if (draws) {
                        value += draws[t * B + b];
                        value = value < -1.0f ? -1.0f : (value > 1.0f ? 1.0f : value);
                    }
                    out_value[(size_t)b * steps + t] = value;
                }
                add_contribution(tier, cls, value,
                                 buf + (size_t)b * span + (size_t)(K + p + 1) * M);
            }
        }
        for (int b = 0; b < B; b++) { /* shift by one frame: [k, 3k) -> [0, 2k), zeros after */
            float *sb = buf + (size_t)b * span;
            memmove(sb, sb + (size_t)K * M, sizeof(float) * 2 * K * M);
            memset(sb + (size_t)2 * K * M, 0, sizeof(float) * K * M);
        }
    }
done:
    free(gates);
    free(x);
    free(up);
    free(buf);
    free(act);
    free(logits);
    free(probs);
    free(ranked);
    free(copies);
    free(mixed);
    return status;
}

/* ------------------------------------------------------------------ plan renderer */

/* The plan family's renderer (plan_net.Renderer): per sample,
 * logits = W_out relu(W_mix relu(W_past past + b_past + cond) + b_mix) + b_out,
 * with `past` the last P samples as companded mu-law values. Matrices are panels as above
 * (past: K = P, mix and out: K = H), gate-width vectors zero-padded to a multiple of LOFI_NB. */
typedef struct {
    int32_t past;               /* P: samples the renderer reads back */
    int32_t hidden;             /* H */
    int32_t n_hidden;           /* H rounded up to LOFI_NB */
    int32_t n_classes;          /* V */
    int32_t n_pad;              /* V rounded up to LOFI_NB */
    int32_t hop;                /* samples per conditioning frame */
    const float *past_weight;   /* panels K = P, N = n_hidden */
    const float *past_bias;     /* [n_hidden] */
    const float *mix_weight;    /* panels K = H, N = n_hidden */
    const float *mix_bias;      /* [n_hidden] */
    const float *out_weight;    /* panels K = H, N = n_pad */
    const float *out_bias;      /* [n_pad] */
    const float *levels;        /* [V] the companded value of each class */
} LofiRenderer;

/* Inverse-CDF draw from softmax(logits * scale) with uniform u, as plan_net.render_reference
 * does: exp(x - max) normalised, the CDF accumulated in double and stored as float, u scaled
 * by its last value, the class the first whose CDF exceeds it (the last where none does).
 * `probs`: scratch of n floats. */
static int draw_scaled(const float *logits, const int n, const float scale, const float u,
                       float *probs) {
    for (int j = 0; j < n; j++) probs[j] = logits[j] * scale;
    float top = probs[0];
    for (int j = 1; j < n; j++) top = probs[j] > top ? probs[j] : top;
    for (int j = 0; j < n; j++) probs[j] = fast_exp(probs[j] - top);
    double total = 0.0;
    for (int j = 0; j < n; j++) total += probs[j];
    const float inv = (float)(1.0 / total);
    for (int j = 0; j < n; j++) probs[j] *= inv;
    double cdf = 0.0;
    for (int j = 0; j < n; j++) cdf += probs[j];
    const float target = u * (float)cdf;
    cdf = 0.0;
    for (int j = 0; j < n; j++) {
        cdf += probs[j];
        if ((float)cdf > target) return j;
    }
    return n - 1;
}

#ifndef LOFI_RENDER_TILE
#define LOFI_RENDER_TILE 16 /* samples whose past-window products are one matrix product */
#endif

/* Render `steps` samples for each of `batch` rows: tokens[b, t] drawn with uniforms[b, t]
 * (temperature: logits * `scale`), sample t conditioned on cond[b * cond_b + (t / hop) * H :]
 * (`frames` frames per row: steps <= frames * hop). `past` [batch, P] the companded samples
 * before the first (read only); `past_out` [batch, P] receives the last P after the call.
 *
 * Each row's past lives in a mirrored ring of 2P floats (each value written at i and i + P), so
 * any window is P contiguous floats and moving on copies nothing. W_past is read once per tile
 * of T = LOFI_RENDER_TILE samples rather than once per sample: one product over the tile's T
 * windows with the samples not yet drawn left out (zeros), then each drawn sample adds its
 * share to the later steps of the tile (value * row P - d of W_past^T at lag d < T, T rows
 * kept apart, in L1). Only the order of the sums differs from render_reference's. */
LOFI_API int lofi_render(const LofiRenderer *net, const int32_t batch, const int32_t steps,
                         const float *past, const float *cond, const int64_t cond_b,
                         const int32_t frames, const float *uniforms, const float scale,
                         int64_t *tokens, float *past_out) {
    const int B = batch, P = net->past, H = net->hidden, HP = net->n_hidden;
    const int V = net->n_classes, VP = net->n_pad, hop = net->hop;
    if (B < 1 || steps < 0 || P < 1 || H < 1 || HP < H || HP % LOFI_NB || V < 1 || VP < V ||
        VP % LOFI_NB || hop < 1 || frames < 0 || (int64_t)frames * hop < steps || !past ||
        !past_out || !net->levels || (steps && (!cond || !uniforms || !tokens)) ||
        !(scale > 0.0f))
        return LOFI_BAD_ARGS;
    const int T = P < LOFI_RENDER_TILE ? P : LOFI_RENDER_TILE;
    const size_t ring_len = (size_t)2 * P;
    float *ring = malloc(sizeof(float) * (size_t)B * ring_len);
    float *windows = malloc(sizeof(float) * (size_t)B * T * P); /* [B, T, P] */
    float *acc = malloc(sizeof(float) * (size_t)B * T * HP);    /* [B, T, HP] */
    float *recent = malloc(sizeof(float) * (size_t)T * HP);     /* [d] = W_past^T row P - d */
    float *pre = malloc(sizeof(float) * (size_t)B * HP);
    float *mid = malloc(sizeof(float) * (size_t)B * HP);
    float *logits = malloc(sizeof(float) * (size_t)B * VP);
    float *probs = malloc(sizeof(float) * (size_t)V);
    int status = LOFI_OK;
    if (!ring || !windows || !acc || !recent || !pre || !mid || !logits || !probs) {
        status = LOFI_NO_MEMORY;
        goto done;
    }
    for (int b = 0; b < B; b++) {
        float *rb = ring + (size_t)b * ring_len;
        memcpy(rb, past + (size_t)b * P, sizeof(float) * P);
        memcpy(rb + P, past + (size_t)b * P, sizeof(float) * P);
    }
    for (int d = 1; d < T; d++) /* unpack rows P - d of the panels */
        for (int j = 0; j < HP; j++)
            recent[(size_t)d * HP + j] =
                net->past_weight[((size_t)(j / LOFI_NB) * P + (P - d)) * LOFI_NB + j % LOFI_NB];
    int head = 0; /* step t's window is ring[head : head + P], oldest first */
    for (int32_t t0 = 0; t0 < steps; t0 += T) {
        const int count = steps - t0 < T ? steps - t0 : T;
        for (int b = 0; b < B; b++) /* the tile's windows, the samples yet to come as zeros */
            for (int i = 0; i < count; i++) {
                float *w = windows + ((size_t)b * count + i) * P;
                const float *rb = ring + (size_t)b * ring_len;
                const int from = head + i < P ? head + i : head + i - P;
                memcpy(w, rb + from, sizeof(float) * (P - i));
                memset(w + P - i, 0, sizeof(float) * i);
            }
        fill_bias(B * count, HP, net->past_bias, acc);
        matmul_acc(B * count, windows, P, net->past_weight, P, 0, P, acc, HP, HP);
        for (int i = 0; i < count; i++) {
            const int32_t t = t0 + i;
            for (int b = 0; b < B; b++) {
                const float *ab = acc + ((size_t)b * count + i) * HP;
                const float *cb = cond + b * cond_b + (int64_t)(t / hop) * H;
                float *pb = pre + (size_t)b * HP;
                for (int j = 0; j < H; j++) pb[j] = ab[j] + cb[j];
                for (int j = H; j < HP; j++) pb[j] = ab[j];
                for (int j = 0; j < HP; j++) pb[j] = pb[j] > 0.0f ? pb[j] : 0.0f;
            }
            fill_bias(B, HP, net->mix_bias, mid);
            matmul_acc(B, pre, HP, net->mix_weight, H, 0, H, mid, HP, HP);
            for (size_t k = 0; k < (size_t)B * HP; k++) mid[k] = mid[k] > 0.0f ? mid[k] : 0.0f;
            fill_bias(B, VP, net->out_bias, logits);
            matmul_acc(B, mid, HP, net->out_weight, H, 0, H, logits, VP, VP);
            for (int b = 0; b < B; b++) {
                const int cls = draw_scaled(logits + (size_t)b * VP, V, scale,
                                            uniforms[(size_t)b * steps + t], probs);
                const float value = net->levels[cls];
                tokens[(size_t)b * steps + t] = cls;
                float *rb = ring + (size_t)b * ring_len;
                rb[head] = rb[head + P] = value;
                for (int later = i + 1; later < count; later++) { /* lag later - i */
                    float *al = acc + ((size_t)b * count + later) * HP;
                    const float *wd = recent + (size_t)(later - i) * HP;
                    for (int j = 0; j < HP; j++) al[j] += value * wd[j];
                }
            }
            head = head + 1 == P ? 0 : head + 1;
        }
    }
    for (int b = 0; b < B; b++)
        memcpy(past_out + (size_t)b * P, ring + (size_t)b * ring_len + head, sizeof(float) * P);
done:
    free(ring);
    free(windows);
    free(acc);
    free(recent);
    free(pre);
    free(mid);
    free(logits);
    free(probs);
    return status;
}
