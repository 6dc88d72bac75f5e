/*
 * kascade_lambda.h: the C ABI of Kascade's `cdylib` lambdas (ABI version 1).
 *
 * A cdylib lambda is a shared library the broker loads into its own process
 * (dlopen) and calls once per new version under the prefix it is bound to,
 * or once per record when the bound key is a Kafka partition
 * (/cms/topics/T/p). It is TRUSTED code: it runs in the broker's address
 * space, with no sandbox, no fuel and no memory cap. A crash in it (a bad
 * pointer, an abort, a stack overflow) is a crash of the broker, and an
 * endless loop in it holds an upcall worker forever. Deploy code you would
 * link into the broker; for untrusted code, use the `wasm` kind.
 *
 * Build:   cc -shared -fPIC -O2 -I include -o libmy_lambda.so my_lambda.c
 * Deploy:  a binding of kind "cdylib" with config
 *          {"path": "/abs/path/libmy_lambda.so", "symbol": "kascade_handle"}
 *          ("symbol" is optional; it names the handler, kascade_handle by default).
 *
 * The library exports:
 *   uint32_t kascade_abi_version(void);   must return KASCADE_LAMBDA_ABI_VERSION
 *   int32_t  kascade_handle(const kascade_host *host, const kascade_input *input);
 *            (or any other name given as "symbol", with this signature)
 *
 * Calls: the handler may run on several upcall threads at once (for different
 * keys; one key's inputs always arrive one at a time, in order), so shared
 * state needs its own locking. It must return promptly.
 *
 * Zero-copy: input->key and input->value point into the stored version (for a
 * Kafka record: into the stored batch). They are valid until the handler
 * returns and must not be written. Emitting a range inside input->value
 * shares it with the output version: no copy is made.
 *
 * Writes: emit, put and trigger are collected during the call and made, in
 * order, only when the handler returns 0. A handler that returns anything else
 * writes nothing and is counted as a lambda error.
 *
 * The host functions may only be called from the handler's own thread,
 * during the call, with the `host->ctx` the call received.
 */
#ifndef KASCADE_LAMBDA_H
#define KASCADE_LAMBDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes. */
#define KASCADE_LAMBDA_ABI_VERSION 1u

/** Success. */
#define KASCADE_OK 0
/** get: no such object. */
#define KASCADE_NOT_FOUND (-1)
/** A bad pointer or length, a key that is not a valid key (absolute UTF-8 path,
 *  no empty or ".." segments), a key a lambda may not write (a Kafka partition:
 *  emit to a destination under /cms/topics instead), or output past the
 *  binding's max_output_bytes. */
#define KASCADE_INVALID (-2)
/** The engine is shutting down. */
#define KASCADE_UNAVAILABLE (-4)

/** Log levels of kascade_host.log. */
#define KASCADE_LOG_ERROR 0
#define KASCADE_LOG_WARN 1
#define KASCADE_LOG_INFO 2
#define KASCADE_LOG_DEBUG 3
#define KASCADE_LOG_TRACE 4

/** One input: a stored version, or one record of a stored Kafka batch. */
typedef struct kascade_input {
    /** The key (a Kafka record's key; empty for a null key). Not NUL-terminated. */
    const uint8_t *key;
    size_t key_len;
    /** The value (a Kafka record's value; empty for a null value). */
    const uint8_t *value;
    size_t value_len;
    /** The shard's update number of the stored version. */
    uint64_t version;
    /** The key's position of the version (a Kafka record's offset). */
    uint64_t seq;
    /** Microseconds since the Unix epoch (a Kafka record's timestamp, in µs). */
    uint64_t timestamp_us;
} kascade_input;

/** What the handler can do: each function takes `ctx` as its first argument. */
typedef struct kascade_host {
    /** Opaque; pass it back to every function below. */
    void *ctx;
    /** Sends value to every destination of the binding (under the input key's
     *  path below the bound prefix; under /cms/topics, as a record appended to
     *  the topic with the input record's key and timestamp). */
    int32_t (*emit)(void *ctx, const uint8_t *value, size_t value_len);
    /** Stores value as a new version of key (made after the handler returns 0). */
    int32_t (*put)(void *ctx, const uint8_t *key, size_t key_len,
                   const uint8_t *value, size_t value_len);
    /** Upcalls the lambdas bound over key with value, storing nothing
     *  (made after the handler returns 0). */
    int32_t (*trigger)(void *ctx, const uint8_t *key, size_t key_len,
                       const uint8_t *value, size_t value_len);
    /** Reads the latest version of key: on KASCADE_OK, *value and *value_len
     *  point at its stored bytes (zero-copy), valid until the handler returns.
     *  Writes of this call are not visible yet. */
    int32_t (*get)(void *ctx, const uint8_t *key, size_t key_len,
                   const uint8_t **value, size_t *value_len);
    /** Logs a message (not NUL-terminated) through the broker's log. */
    void (*log)(void *ctx, int32_t level, const uint8_t *message, size_t message_len);
} kascade_host;

/** The handler's type: return 0 on success, anything else to fail the call. */
typedef int32_t (*kascade_handle_fn)(const kascade_host *host, const kascade_input *input);

/** The ABI version the library was built against (KASCADE_LAMBDA_ABI_VERSION). */
uint32_t kascade_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* KASCADE_LAMBDA_H */
