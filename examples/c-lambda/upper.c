/*
 * An example Kascade lambda in C (see include/kascade_lambda.h, docs/lambdas.md).
 *
 *   cc -shared -fPIC -O2 -I include -o libupper.so examples/c-lambda/upper.c
 *
 * Handlers (a binding's "symbol" config picks one):
 *   kascade_handle  emits each value upper-cased (ASCII): a copy, made here;
 *   forward         emits each value unchanged, zero-copy: the output version
 *                   shares the input's stored bytes;
 *   reject          fails every call (returns 1): nothing is written, and the
 *                   broker counts the call as a lambda error.
 */
#include <stdlib.h>

#include "kascade_lambda.h"

uint32_t kascade_abi_version(void) { return KASCADE_LAMBDA_ABI_VERSION; }

int32_t kascade_handle(const kascade_host *host, const kascade_input *input) {
    if (input->value_len == 0) {
        return host->emit(host->ctx, input->value, 0);
    }
    uint8_t *upper = malloc(input->value_len);
    if (upper == NULL) {
        static const char message[] = "out of memory";
        host->log(host->ctx, KASCADE_LOG_ERROR, (const uint8_t *)message, sizeof message - 1);
        return 1;
    }
    for (size_t i = 0; i < input->value_len; i++) {
        uint8_t c = input->value[i];
        upper[i] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
    }
    /* emit copies bytes that are not inside the input, so the buffer can go now. */
    int32_t rc = host->emit(host->ctx, upper, input->value_len);
    free(upper);
    return rc;
}

int32_t forward(const kascade_host *host, const kascade_input *input) {
    return host->emit(host->ctx, input->value, input->value_len);
}

int32_t reject(const kascade_host *host, const kascade_input *input) {
    (void)host;
    (void)input;
    return 1;
}
