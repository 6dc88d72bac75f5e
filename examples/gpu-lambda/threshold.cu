/*
 * An example Kascade GPU lambda (kind `cuda`, see docs/lambdas.md): keeps the
 * float32 values of each record that are above a threshold, in order.
 *
 *   kascade lambda deploy above --prefix /cms/topics/readings --dest /cms/topics/above \
 *       --cuda examples/gpu-lambda/threshold.cu --kernel threshold \
 *       --grid 1 --block 1024 --params-f32 0.5
 *
 * Input:  the record's value, little-endian float32s (a trailing piece shorter
 *         than 4 bytes is ignored); any alignment (a record lies anywhere in
 *         its batch, so values are read byte by byte).
 * Params: one little-endian float32, the threshold (0.0 when absent).
 * Output: the kept values' bytes, unchanged, in input order; an output of
 *         zero bytes emits nothing.
 * Launch: one block ("grid": 1) of a multiple of 32 threads: the block walks
 *         the input in chunks of blockDim.x * PER_THREAD values and compacts
 *         each chunk with a block-wide prefix sum, so the output order is the
 *         input order (examples/gpu-lambda/cpu.rs computes the same bytes on
 *         the CPU; the tests compare them byte for byte).
 *
 * threshold.ptx beside this file is this source compiled by NVRTC 13.0 for
 * compute_75 (PTX runs on that architecture and every newer one), for hosts
 * without NVRTC.
 */

#define PER_THREAD 8

static __device__ unsigned int load_le32(const unsigned char *p) {
    return (unsigned int)p[0] | ((unsigned int)p[1] << 8) | ((unsigned int)p[2] << 16) |
           ((unsigned int)p[3] << 24);
}

/* At most 1024 threads a block: the compiler keeps to the registers that many allow. */
extern "C" __global__ void __launch_bounds__(1024) threshold(const unsigned char *input, unsigned long long input_len,
                                     unsigned char *output, unsigned long long output_cap,
                                     unsigned long long *output_len,
                                     const unsigned char *params, unsigned long long params_len) {
    __shared__ unsigned int warp_offsets[32];
    __shared__ unsigned int chunk_total;

    const float limit = params_len >= 4 ? __int_as_float((int)load_le32(params)) : 0.0f;
    const unsigned long long n = input_len / 4;
    const unsigned int lane = threadIdx.x & 31;
    const unsigned int warp = threadIdx.x >> 5;
    const unsigned int warps = (blockDim.x + 31) >> 5;
    const unsigned long long chunk = (unsigned long long)blockDim.x * PER_THREAD;
    unsigned int *out = (unsigned int *)output;
    unsigned long long base = 0; /* values kept before this chunk: the same in every thread */

    for (unsigned long long start = 0; start < n; start += chunk) {
        const unsigned long long first = start + (unsigned long long)threadIdx.x * PER_THREAD;
        unsigned int bits[PER_THREAD];
        unsigned int keep = 0;
        for (int j = 0; j < PER_THREAD; j++) {
            bits[j] = 0;
            if (first + j < n) {
                bits[j] = load_le32(input + 4 * (first + j));
                if (__int_as_float((int)bits[j]) > limit) {
                    keep |= 1u << j;
                }
            }
        }
        const unsigned int count = __popc(keep);

        /* Inclusive prefix sum of the counts across the warp. */
        const unsigned int active = __activemask();
        unsigned int sum = count;
        for (unsigned int d = 1; d < 32; d <<= 1) {
            const unsigned int up = __shfl_up_sync(active, sum, d);
            if (lane >= d) {
                sum += up;
            }
        }
        if (lane == 31 - __clz(active)) {
            warp_offsets[warp] = sum;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned int total = 0;
            for (unsigned int w = 0; w < warps; w++) {
                const unsigned int t = warp_offsets[w];
                warp_offsets[w] = total;
                total += t;
            }
            chunk_total = total;
        }
        __syncthreads();

        unsigned long long at = base + warp_offsets[warp] + (sum - count);
        for (int j = 0; j < PER_THREAD; j++) {
            if (keep & (1u << j)) {
                if ((at + 1) * 4 <= output_cap) {
                    out[at] = bits[j];
                }
                at++;
            }
        }
        base += chunk_total;
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        /* More than output_cap tells the host the output did not fit: the call fails. */
        *output_len = base * 4;
    }
}
