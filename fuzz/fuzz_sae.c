/* libFuzzer target: the files a downloaded SAE or checkpoint directory brings
 * besides tensor data. The first input byte picks what the rest becomes:
 *   0  params.npz of a Gemma Scope 1 SAE (zip container and .npy arrays)
 *   1  cfg.json of a SAELens SAE (beside fixed, valid weights)
 *   2  config.json of a Gemma Scope 2 SAE (beside fixed params.safetensors)
 *   3  model.safetensors.index.json of a sharded checkpoint (beside a fixed shard)
 * Everything must load or fail with a status; a loaded SAE must encode. */
#include "stetho/checkpoint.h"
#include "stetho/sae.h"
#include "stetho/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { DM = 4, DS = 8 };
static char g_root[64], g_dir[4][128];
static int g_ready;

static void put(const char *dir, const char *name, const void *data, size_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) __builtin_trap();
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void setup(void) {
    snprintf(g_root, sizeof g_root, "/tmp/stetho-fuzz-sae-%ld", (long)getpid());
    mkdir(g_root, 0755);
    static const char *names[4] = {"gs1/layer_3", "saelens", "gs2", "ckpt"};
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s/gs1", g_root);
    mkdir(tmp, 0755);
    for (int i = 0; i < 4; i++) {
        snprintf(g_dir[i], sizeof g_dir[i], "%s/%s", g_root, names[i]);
        mkdir(g_dir[i], 0755);
    }
    static float w_enc[DM * DS], w_dec[DS * DM], b_enc[DS], b_dec[DM], thr[DS];
    for (int i = 0; i < DM * DS; i++) w_enc[i] = (float)((i * 7) % 5 - 2) / 4, w_dec[i] = (float)((i * 3) % 5 - 2) / 4;
    for (int j = 0; j < DS; j++) thr[j] = 0.1f;
    stetho_tensor lens[4] = {
        {.name = "W_enc", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {DM, DS}, .nbytes = sizeof w_enc, .data = w_enc},
        {.name = "W_dec", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {DS, DM}, .nbytes = sizeof w_dec, .data = w_dec},
        {.name = "b_enc", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DS}, .nbytes = sizeof b_enc, .data = b_enc},
        {.name = "b_dec", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DM}, .nbytes = sizeof b_dec, .data = b_dec}};
    char path[256];
    snprintf(path, sizeof path, "%s/sae_weights.safetensors", g_dir[1]);
    if (stetho_st_write_tensors(path, lens, 4, NULL, 0)) __builtin_trap();
    stetho_tensor gs2[5] = {
        {.name = "w_enc", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {DM, DS}, .nbytes = sizeof w_enc, .data = w_enc},
        {.name = "w_dec", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {DS, DM}, .nbytes = sizeof w_dec, .data = w_dec},
        {.name = "b_enc", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DS}, .nbytes = sizeof b_enc, .data = b_enc},
        {.name = "b_dec", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DM}, .nbytes = sizeof b_dec, .data = b_dec},
        {.name = "threshold", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DS}, .nbytes = sizeof thr, .data = thr}};
    snprintf(path, sizeof path, "%s/params.safetensors", g_dir[2]);
    if (stetho_st_write_tensors(path, gs2, 5, NULL, 0)) __builtin_trap();
    stetho_tensor shard[2] = {
        {.name = "model.embed_tokens.weight", .dtype = STETHO_DTYPE_F32, .ndim = 2, .shape = {DS, DM},
         .nbytes = sizeof w_dec, .data = w_dec},
        {.name = "model.norm.weight", .dtype = STETHO_DTYPE_F32, .ndim = 1, .shape = {DM}, .nbytes = sizeof b_dec,
         .data = b_dec}};
    snprintf(path, sizeof path, "%s/model-00001-of-00001.safetensors", g_dir[3]);
    if (stetho_st_write_tensors(path, shard, 2, NULL, 0)) __builtin_trap();
    g_ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    if (size < 1) return 0;
    int mode = data[0] % 4;
    static const char *file[4] = {"params.npz", "cfg.json", "config.json", "model.safetensors.index.json"};
    put(g_dir[mode], file[mode], data + 1, size - 1);
    if (mode < 3) {
        stetho_sae s;
        if (stetho_sae_load(&s, g_dir[mode]) == STETHO_OK) {
            if (s.d_model <= 0 || s.d_sae <= 0 || s.d_model > 4096 || s.d_sae > 65536) __builtin_trap();
            float *x = calloc((size_t)s.d_model, sizeof *x), *f = calloc((size_t)s.d_sae, sizeof *f);
            for (int i = 0; i < s.d_model; i++) x[i] = (float)i - 1.5f;
            (void)stetho_sae_encode(&s, x, 1, f);
            free(x);
            free(f);
            stetho_sae_free(&s);
        }
    } else {
        stetho_checkpoint c;
        if (stetho_checkpoint_open(&c, g_dir[3]) == STETHO_OK) stetho_checkpoint_close(&c);
    }
    return 0;
}
