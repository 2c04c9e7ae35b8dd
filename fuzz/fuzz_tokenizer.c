/* libFuzzer target: tokenizer.json loading (the input as a tokenizer file) and
 * encoding of arbitrary bytes with a fixed byte-fallback BPE tokenizer, whose
 * decode must round-trip valid UTF-8. */
#include "stetho/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static stetho_tokenizer g_tok;
static bool g_ready;
static char g_path[64];

static const char *fixed_json =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<pad>\",\"special\":true},"
    "{\"id\":1,\"content\":\"<eos>\",\"special\":true},{\"id\":2,\"content\":\"<bos>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"},"
    "\"pre_tokenizer\":null,\"post_processor\":null,"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},"
    "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":null,\"vocab\":{%s},\"merges\":[[\"a\",\"b\"],[\"ab\",\"c\"]]}}";

static void setup(void) {
    char vocab[16384];
    size_t o = (size_t)snprintf(vocab, sizeof vocab, "\"<pad>\":0,\"<eos>\":1,\"<bos>\":2");
    for (int b = 0; b < 256; b++) o += (size_t)snprintf(vocab + o, sizeof vocab - o, ",\"<0x%02X>\":%d", b, 3 + b);
    snprintf(vocab + o, sizeof vocab - o, ",\"a\":259,\"b\":260,\"c\":261,\"ab\":262,\"abc\":263,\"\\u2581\":264");
    size_t n = strlen(fixed_json) + strlen(vocab) + 1;
    char *json = malloc(n);
    snprintf(json, n, fixed_json, vocab);
    snprintf(g_path, sizeof g_path, "/tmp/stetho-fuzz-tok-%ld.json", (long)getpid());
    FILE *f = fopen(g_path, "w");
    fputs(json, f);
    fclose(f);
    free(json);
    g_ready = stetho_tokenizer_load(&g_tok, g_path) == STETHO_OK;
    if (!g_ready) __builtin_trap(); /* the fixed tokenizer must load */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_ready) setup();
    int32_t *ids = NULL;
    size_t n = 0;
    if (stetho_tokenizer_encode(&g_tok, (const char *)data, size, true, &ids, &n) == STETHO_OK) {
        char *text = NULL;
        size_t len = 0;
        if (stetho_tokenizer_decode(&g_tok, ids, n, true, &text, &len) == STETHO_OK) {
            /* special-token text and a literal U+2581 legitimately do not round-trip */
            char *copy = malloc(size + 1);
            memcpy(copy, data, size);
            copy[size] = '\0';
            bool plain = strlen(copy) == size && !strstr(copy, "<pad>") && !strstr(copy, "<eos>") &&
                         !strstr(copy, "<bos>") && !strstr(copy, "\xe2\x96\x81");
            free(copy);
            if (plain && (len != size || memcmp(text, data, size) != 0)) __builtin_trap();
            free(text);
        }
        free(ids);
    }
    /* the input as a tokenizer.json */
    if (size < 65536) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/stetho-fuzz-in-%ld.json", (long)getpid());
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(data, 1, size, f);
            fclose(f);
            stetho_tokenizer t;
            if (stetho_tokenizer_load(&t, path) == STETHO_OK) stetho_tokenizer_free(&t);
        }
    }
    return 0;
}
