/* A Hugging Face checkpoint: a directory with config.json and safetensors shards
 * (one `model.safetensors`, or several listed in `model.safetensors.index.json`),
 * or a single .safetensors file. Every shard is mmapped and validated; tensors
 * are views into the mappings. */
#ifndef STETHO_CHECKPOINT_H
#define STETHO_CHECKPOINT_H

#include "stetho/arch.h"
#include "stetho/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *path;                  /* as given */
    char *dir;                   /* the directory, or NULL for a single file */
    bool has_index;              /* sharded with model.safetensors.index.json */
    size_t n_shards;
    stetho_st_file *shards;
    char **shard_names;          /* file names relative to dir */
    size_t n_tensors;
    const stetho_tensor **tensors; /* all shards' tensors, in shard then file order */
    const stetho_tensor **sorted;  /* the same, sorted by name */
    bool has_config;
    stetho_config config;
    char *config_json;           /* raw config.json text (NUL-terminated), or NULL */
    size_t config_json_len;
    size_t n_owned;
    void **owned;                /* tensor data an in-memory edit put in place of
                                    mapped bytes (stetho_taskvec_edit_in_memory) */
} stetho_checkpoint;

stetho_status stetho_checkpoint_open(stetho_checkpoint *c, const char *path);
void stetho_checkpoint_close(stetho_checkpoint *c);
const stetho_tensor *stetho_checkpoint_find(const stetho_checkpoint *c, const char *name);
/* The shard that holds t. */
const stetho_st_file *stetho_checkpoint_shard(const stetho_checkpoint *c, const stetho_tensor *t);
/* Number of decoder layers: the larger of config.json's num_hidden_layers and
 * 1 + the largest layer index in tensor names (0 if neither). */
int stetho_checkpoint_n_layers(const stetho_checkpoint *c);

/* Read a whole small file (config, index, JSONL line sets) with a size limit.
 * *out is NUL-terminated; free with free(). */
stetho_status stetho_read_file(const char *path, size_t max_size, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
