/*
 * classify.c: classify raw images with infer's C API (include/infer.h).
 *
 *   classify MODEL IMAGE...
 *
 * MODEL is a model file the trainer exported (e.g. models/fast.safetensors).
 * Each IMAGE is raw pixels of the model's input size: height x width x
 * channels bytes, row-major, channels last (RGB for 3 channels), as
 * `infer_input_*` report them. Prints one line per image, tab-separated:
 *
 *   FILE  CLASS  INDEX  PROBABILITY
 *
 * with the probability printed with 9 significant digits (enough to read back
 * the exact float). Exit status 1 when any file fails, 2 on a usage error.
 *
 * Build (from the repository root, after `cargo build --release -p infer-c`):
 *
 *   cc -std=c99 -O2 -I infer-c/include infer-c/examples/c/classify.c \
 *      target/release/libinfer_c.a -lpthread -ldl -lm -o classify-c
 *
 * This program allocates with malloc for simplicity; the library itself never
 * allocates: every buffer it uses is passed in, and could as well be static.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer.h"

/* Reads a whole file into a new buffer; NULL (and a message) on failure. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            size_t grown = cap ? cap * 2 : 1 << 16;
            unsigned char *bigger = realloc(buf, grown);
            if (bigger == NULL) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = bigger;
            cap = grown;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            break;
        }
    }
    if (ferror(f)) {
        perror(path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    size_t model_len = 0;
    unsigned char *bytes;
    void *storage;
    InferModel *model = NULL;
    char detail[256];
    float *scratch, *probs;
    size_t input_bytes, classes;
    int status, failed = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL IMAGE...\n", argv[0]);
        return 2;
    }
    bytes = read_file(argv[1], &model_len);
    if (bytes == NULL) {
        return 1;
    }
    /* malloc's alignment is always enough for infer_model_align(). */
    storage = malloc(infer_model_size());
    if (storage == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    status = infer_model_open(bytes, model_len, storage, infer_model_size(), &model, detail,
                              sizeof detail);
    if (status != INFER_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[1], infer_error_message(status), detail);
        return 1;
    }
    /* As the classify CLI: Winograd for an f32 model's 3x3 layers (faster on
     * AVX-512; no effect on an int8 model). Before infer_scratch_bytes(). */
    infer_set_winograd(model, 1);
    input_bytes = infer_input_bytes(model);
    classes = infer_num_classes(model);
    scratch = malloc(infer_scratch_bytes(model));
    probs = malloc(classes * sizeof *probs);
    if (scratch == NULL || probs == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    for (int i = 2; i < argc; i++) {
        size_t len = 0, class_index = 0;
        float probability = 0.0f;
        char name[128];
        unsigned char *image = read_file(argv[i], &len);
        if (image == NULL) {
            failed = 1;
            continue;
        }
        if (len != input_bytes) {
            fprintf(stderr, "%s: %zu bytes, the model needs %zu (%zux%zux%zu)\n", argv[i], len,
                    input_bytes, infer_input_height(model), infer_input_width(model),
                    infer_input_channels(model));
            free(image);
            failed = 1;
            continue;
        }
        status = infer_classify(model, image, len, scratch, infer_scratch_len(model), probs,
                                classes, &class_index, &probability);
        free(image);
        if (status != INFER_OK) {
            fprintf(stderr, "%s: %s\n", argv[i], infer_error_message(status));
            failed = 1;
            continue;
        }
        status = infer_class_name_copy(model, class_index, name, sizeof name);
        if (status == INFER_ERR_NO_CLASS_NAMES) {
            snprintf(name, sizeof name, "class %zu", class_index);
        }
        /* INFER_ERR_BUFFER_TOO_SMALL: a name longer than 127 bytes, printed cut. */
        printf("%s\t%s\t%zu\t%.9g\n", argv[i], name, class_index, (double)probability);
    }

    infer_model_close(model);
    free(probs);
    free(scratch);
    free(storage);
    free(bytes);
    return failed;
}
