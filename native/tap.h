/* rankguide-edge hidden-state tap: a llama.cpp eval callback that copies the residual-stream
 * outputs of chosen layers (tensors named "l_out-<il>") into a preallocated buffer.
 *
 * No llama.cpp or ggml header is needed: the four ggml accessors the tap calls are handed in as
 * function pointers when a tap is created. Tensors are read with ggml_backend_tensor_get, so the tap
 * also works when layers live on a GPU. Each tap is an independent object (no globals), so any number
 * of llama contexts can be tapped at once; a tap must only be used by the thread that decodes on its
 * context.
 *
 * Buffer layout (float32, C order): [n_slots][max_rows][n_embd], slot k holding the layer
 * layers[k] given at creation. rows[k] counts rows written into slot k since the last reset; the
 * rows of one decode arrive in batch order (for the model's last layer llama.cpp only computes the
 * rows whose logits were requested, so fewer rows may arrive there).
 */
#ifndef RANKGUIDE_TAP_H
#define RANKGUIDE_TAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef const char *(*rg_get_name_fn)(const void *tensor);
typedef int64_t (*rg_nelements_fn)(const void *tensor);
typedef size_t (*rg_nbytes_fn)(const void *tensor);
typedef void (*rg_tensor_get_fn)(const void *tensor, void *data, size_t offset, size_t size);

typedef struct rg_tap rg_tap;

/* Returns NULL on bad arguments or allocation failure. layers[] are 0-based layer indices, each in
 * [0, n_layer), without duplicates. */
rg_tap *rg_tap_new(rg_get_name_fn get_name, rg_nelements_fn nelements, rg_nbytes_fn nbytes,
                   rg_tensor_get_fn tensor_get, int32_t n_embd, int32_t n_layer,
                   const int32_t *layers, int32_t n_slots, int32_t max_rows);
void rg_tap_free(rg_tap *tap);

/* The callback to store in llama_context_params.cb_eval, with the tap as cb_eval_user_data. */
bool rg_tap_eval_cb(void *tensor, bool ask, void *user_data);

void rg_tap_reset(rg_tap *tap);              /* rows, overflow and error counters to zero */
void rg_tap_set_enabled(rg_tap *tap, int32_t enabled); /* disabled: asks for nothing */
float *rg_tap_buffer(rg_tap *tap);
const int32_t *rg_tap_rows(const rg_tap *tap);
int64_t rg_tap_overflow(const rg_tap *tap);  /* rows dropped because a slot was full */
int64_t rg_tap_errors(const rg_tap *tap);    /* tapped tensors that were not F32 n_embd rows */
int32_t rg_tap_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif
