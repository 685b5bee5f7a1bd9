/* See tap.h for the contract. */
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#define RG_API __declspec(dllexport)
#else
#define RG_API __attribute__((visibility("default")))
#endif

#define RG_ABI_VERSION 1

static const char RG_PREFIX[] = "l_out-";
#define RG_PREFIX_LEN (sizeof(RG_PREFIX) - 1)

struct rg_tap {
    rg_get_name_fn get_name;
    rg_nelements_fn nelements;
    rg_nbytes_fn nbytes;
    rg_tensor_get_fn tensor_get;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_slots;
    int32_t max_rows;
    int32_t enabled;
    int32_t *slot_of_layer; /* [n_layer]: slot index or -1 */
    int32_t *rows;          /* [n_slots] */
    float *buf;             /* [n_slots][max_rows][n_embd] */
    int64_t overflow;
    int64_t errors;
};

/* The slot a tensor belongs to, or -1. Parses "l_out-<digits>" with nothing after the digits. */
static int32_t slot_for(const rg_tap *tap, const void *tensor) {
    const char *name = tap->get_name(tensor);
    if (name == NULL || strncmp(name, RG_PREFIX, RG_PREFIX_LEN) != 0) {
        return -1;
    }
    const char *p = name + RG_PREFIX_LEN;
    if (*p < '0' || *p > '9') {
        return -1;
    }
    int64_t il = 0;
    for (; *p >= '0' && *p <= '9'; ++p) {
        il = il * 10 + (*p - '0');
        if (il >= tap->n_layer) {
            return -1;
        }
    }
    if (*p != '\0') {
        return -1;
    }
    return tap->slot_of_layer[il];
}

RG_API rg_tap *rg_tap_new(rg_get_name_fn get_name, rg_nelements_fn nelements, rg_nbytes_fn nbytes,
                          rg_tensor_get_fn tensor_get, int32_t n_embd, int32_t n_layer,
                          const int32_t *layers, int32_t n_slots, int32_t max_rows) {
    if (!get_name || !nelements || !nbytes || !tensor_get || n_embd <= 0 || n_layer <= 0 ||
        n_slots <= 0 || n_slots > n_layer || max_rows <= 0 || layers == NULL) {
        return NULL;
    }
    rg_tap *tap = calloc(1, sizeof(*tap));
    if (tap == NULL) {
        return NULL;
    }
    tap->get_name = get_name;
    tap->nelements = nelements;
    tap->nbytes = nbytes;
    tap->tensor_get = tensor_get;
    tap->n_embd = n_embd;
    tap->n_layer = n_layer;
    tap->n_slots = n_slots;
    tap->max_rows = max_rows;
    tap->enabled = 1;
    tap->slot_of_layer = malloc(sizeof(int32_t) * (size_t)n_layer);
    tap->rows = calloc((size_t)n_slots, sizeof(int32_t));
    tap->buf = malloc(sizeof(float) * (size_t)n_slots * (size_t)max_rows * (size_t)n_embd);
    if (!tap->slot_of_layer || !tap->rows || !tap->buf) {
        rg_tap_free(tap);
        return NULL;
    }
    for (int32_t i = 0; i < n_layer; ++i) {
        tap->slot_of_layer[i] = -1;
    }
    for (int32_t k = 0; k < n_slots; ++k) {
        int32_t il = layers[k];
        if (il < 0 || il >= n_layer || tap->slot_of_layer[il] != -1) {
            rg_tap_free(tap);
            return NULL;
        }
        tap->slot_of_layer[il] = k;
    }
    return tap;
}

RG_API void rg_tap_free(rg_tap *tap) {
    if (tap == NULL) {
        return;
    }
    free(tap->slot_of_layer);
    free(tap->rows);
    free(tap->buf);
    free(tap);
}

RG_API bool rg_tap_eval_cb(void *tensor, bool ask, void *user_data) {
    rg_tap *tap = (rg_tap *)user_data;
    if (ask) {
        /* Saying yes splits the graph there; say it only for the tensors we copy. */
        return tap->enabled && slot_for(tap, tensor) >= 0;
    }
    /* Data phase: always return true, false would abort the computation. */
    const int32_t slot = slot_for(tap, tensor);
    if (slot < 0) {
        return true;
    }
    const int64_t nel = tap->nelements(tensor);
    if (nel == 0) {
        return true; /* e.g. the last layer of a chunk decoded without any logits row */
    }
    if (nel < 0 || nel % tap->n_embd != 0 || tap->nbytes(tensor) != (size_t)nel * sizeof(float)) {
        tap->errors++;
        return true;
    }
    int64_t n_rows = nel / tap->n_embd;
    const int64_t room = (int64_t)tap->max_rows - tap->rows[slot];
    if (n_rows > room) {
        tap->overflow += n_rows - room;
        n_rows = room;
    }
    if (n_rows > 0) {
        float *dst = tap->buf + ((size_t)slot * (size_t)tap->max_rows + (size_t)tap->rows[slot]) * (size_t)tap->n_embd;
        tap->tensor_get(tensor, dst, 0, (size_t)n_rows * (size_t)tap->n_embd * sizeof(float));
        tap->rows[slot] += (int32_t)n_rows;
    }
    return true;
}

RG_API void rg_tap_reset(rg_tap *tap) {
    memset(tap->rows, 0, sizeof(int32_t) * (size_t)tap->n_slots);
    tap->overflow = 0;
    tap->errors = 0;
}

RG_API void rg_tap_set_enabled(rg_tap *tap, int32_t enabled) { tap->enabled = enabled ? 1 : 0; }
RG_API float *rg_tap_buffer(rg_tap *tap) { return tap->buf; }
RG_API const int32_t *rg_tap_rows(const rg_tap *tap) { return tap->rows; }
RG_API int64_t rg_tap_overflow(const rg_tap *tap) { return tap->overflow; }
RG_API int64_t rg_tap_errors(const rg_tap *tap) { return tap->errors; }
RG_API int32_t rg_tap_abi_version(void) { return RG_ABI_VERSION; }
