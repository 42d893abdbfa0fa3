/*
 * test_quant.c - the batch engine's int8 activation quantizers against the
 * single path's.
 *
 *   runc/tests/test_quant [ROUNDS]
 *
 * The batch engine quantizes activations with quantize (one row, plain loops)
 * and quantize_rows (many rows at once, in registers, for groups of 2, 4 and
 * 8); both must give exactly what runc.c's quantize_q8 gives: the same
 * integers and the same scales, bit for bit, in both output forms (floats,
 * and VNNI's bytes + 128), for every kernel set this CPU runs. The rows hold
 * what whole models rarely produce: infinities, NaNs, zeros of both signs,
 * subnormals (whose max / 127 rounds to 0, or far down), values near the
 * largest float, quotients that are exact half-integers, and widths that end
 * in part-vectors, with junk (infinities and NaNs too) in the padding past
 * each row's end, which must change nothing and never be written.
 *
 * It includes runc.c and batch.c themselves: the quantizers are static there.
 */
#define TEST_PROGRAM "test_quant"
#include "runc.c"
#include "batch.c"
#include "test_util.h"

#define ROWS 5
#define XS 192 /* row stride of inputs and outputs: room past the widest row */
#define SS 96  /* row stride of scales */

static unsigned long long rng = 0x2545F4914F6CDD1Dull;

static uint32_t rand_u32(void)
{
    return (uint32_t)(xorshift64s(&rng) >> 32);
}

/* An ordinary activation, or (with probability p_special / 8) one of the kinds above. */
static float value(int p_special)
{
    const float sign = rand_u32() % 2 ? -1.0f : 1.0f;
    if ((int)(rand_u32() % 8) >= p_special) return sign * ldexpf((float)(rand_u32() % 1001) / 1000.0f, (int)(rand_u32() % 8) - 4);
    switch (rand_u32() % 10) {
    case 0: return sign * INFINITY;
    case 1: return NAN;
    case 2: return sign * 0.0f;
    case 3: return sign * ldexpf((float)(1 + rand_u32() % 63), -149);   /* max / 127 rounds to 0 */
    case 4: return sign * ldexpf((float)(64 + rand_u32() % 8000), -149); /* max / 127 rounds far down */
    case 5: return sign * 127.0f; /* with the next kind: quotients that are exact half-integers */
    case 6: return sign * ((float)(rand_u32() % 127) + 0.5f);
    case 7: return sign * 3e38f;
    default: return sign * ldexpf(1.0f + (float)(rand_u32() % 1000) / 1000.0f, (int)(rand_u32() % 40) - 20);
    }
}

typedef void (*rows_fn)(float *, uint8_t *, int, float *, int, const float *, int, int, int, int);
typedef void (*row_fn)(float *, float *, const float *, int, int, uint32_t *, float *, uint8_t *);

/* Quantize ROWS rows of n values in groups of gs with `rows` (when given) or
 * `row`, in both forms; 1 when every integer and scale equals quantize_q8's
 * and nothing past the rows' ends is written. */
static int agrees(rows_fn rows, row_fn row, const float *x, int n, int gs)
{
    static float q[ROWS * XS], sc[ROWS * SS], scu[ROWS * SS], div[XS], ref_sc[SS];
    static uint8_t u[ROWS * XS];
    static int8_t ref[XS];
    static uint32_t ab[XS];
    int r, i, ok = 1;
    memset(q, 0, sizeof q);
    memset(u, 0, sizeof u);
    if (rows) {
        rows(q, NULL, XS, sc, SS, x, XS, ROWS, n, gs);
        rows(NULL, u, XS, scu, SS, x, XS, ROWS, n, gs);
    } else {
        for (r = 0; r < ROWS; r++) {
            row(q + r * XS, sc + r * SS, x + r * XS, n, gs, ab, div, NULL);
            row(NULL, scu + r * SS, x + r * XS, n, gs, ab, div, u + r * XS);
        }
    }
    for (r = 0; r < ROWS; r++) {
        quantize_q8(ref, ref_sc, x + r * XS, n, gs);
        for (i = 0; i < n; i++) ok &= q[r * XS + i] == (float)ref[i] && u[r * XS + i] == (uint8_t)(ref[i] + 128);
        for (; i < XS; i++) ok &= q[r * XS + i] == 0.0f && u[r * XS + i] == 0;
        ok &= memcmp(sc + r * SS, ref_sc, sizeof(float) * (size_t)(n / gs)) == 0;
        ok &= memcmp(scu + r * SS, ref_sc, sizeof(float) * (size_t)(n / gs)) == 0;
    }
    return ok;
}

static void check_set(const char *set, rows_fn rows, row_fn row, int rounds)
{
    /* n, gs: rows of whole vectors, and rows that end in a part-vector */
    static const int shapes[][2] = {{8, 2}, {6, 2}, {54, 2}, {12, 4}, {44, 4}, {172, 4}, {16, 8}, {120, 8},
                                    {48, 16}, {72, 24}};
    static float x[ROWS * XS];
    int round, s, i, bad_rows = 0, bad_row = 0;
    for (round = 0; round < rounds; round++) {
        for (s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++) {
            const int n = shapes[s][0], gs = shapes[s][1], p_special = (int)(rand_u32() % 4);
            for (i = 0; i < ROWS * XS; i++) x[i] = value(p_special);
            if (rows && gs <= 8 && !agrees(rows, NULL, x, n, gs) && bad_rows++ < 3)
                printf("  %s: quantize_rows, n %d, groups of %d, round %d: differs from quantize_q8\n", set, n, gs, round);
            if (!agrees(NULL, row, x, n, gs) && bad_row++ < 3)
                printf("  %s: quantize, n %d, groups of %d, round %d: differs from quantize_q8\n", set, n, gs, round);
        }
    }
    CHECK(bad_rows == 0, "%s: quantize_rows differs from runc.c's quantize_q8 in %d of %d cases", set, bad_rows,
          rounds * 8);
    CHECK(bad_row == 0, "%s: quantize differs from runc.c's quantize_q8 in %d of %d cases", set, bad_row, rounds * 10);
}

int main(int argc, char **argv)
{
    const int rounds = argc > 1 ? atoi(argv[1]) : 2000;
    int sets = 0;
#if RB_C_LANES /* a native build: the portable kernels are vector kernels too */
    check_set("portable kernels", quantize_rows_c, quantize_c, rounds);
    sets++;
#else
    check_set("portable kernels", NULL, quantize_c, rounds);
#endif
#if RB_DISPATCH_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        check_set("AVX2 kernels", quantize_rows_avx2, quantize_avx2, rounds);
        sets++;
    }
    if (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma")) {
        check_set("AVX-512 kernels", quantize_rows_avx512, quantize_avx512, rounds);
        sets++;
    }
#endif
    printf("test_quant: quantize_rows checked in %d kernel sets on this CPU\n", sets);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
