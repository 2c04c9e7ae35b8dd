/* Benchmark: `stetho diff`, `stetho project` (the scalpel) and `stetho edit` on a generated bf16 checkpoint
 * (~2 GB by default), each against a baseline measured in the same run: reading
 * the same input bytes and writing the same number of output bytes with plain
 * read()/write(). Also samples the peak anonymous (non-file) resident memory of
 * the stetho process, which must stay bounded whatever the model size.
 *
 * usage: bench_taskvec STETHO_BINARY WORK_DIR [GB] [JSON_OUT] */
#include "stetho/sae.h"
#include "stetho/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

static uint64_t rng_state = 88172645463325252ull;
static inline uint32_t xorshift(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

/* Write base and fine-tuned checkpoints: Gemma-like layer shapes, bf16. */
static int generate(const char *dir_base, const char *dir_ft, double gb) {
    const uint64_t H = 2048, I = 8192, V = 32768;
    uint64_t per_layer = (4 * H * H + 3 * H * I + 4 * H) * 2;
    int L = (int)((gb * 1e9 - (double)(V * H * 2)) / (double)per_layer);
    if (L < 1) L = 1;
    mkdir(dir_base, 0755);
    mkdir(dir_ft, 0755);
    const char *dirs[2] = {dir_base, dir_ft};
    stetho_st_writer w[2];
    for (int k = 0; k < 2; k++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors", dirs[k]);
        if (stetho_st_writer_init(&w[k], p)) return -1;
        stetho_st_writer_set_meta(&w[k], "format", "pt");
        snprintf(p, sizeof p, "%s/config.json", dirs[k]);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"model_type\":\"gemma3_text\",\"num_hidden_layers\":%d,\"hidden_size\":%llu,"
                   "\"intermediate_size\":%llu,\"num_attention_heads\":8,\"num_key_value_heads\":8,\"head_dim\":256,"
                   "\"vocab_size\":%llu}\n", L, (unsigned long long)H, (unsigned long long)I, (unsigned long long)V);
        fclose(f);
    }
    struct { const char *name; uint64_t a, b; } mods[] = {
        {"self_attn.q_proj.weight", H, H}, {"self_attn.k_proj.weight", H, H}, {"self_attn.v_proj.weight", H, H},
        {"self_attn.o_proj.weight", H, H}, {"mlp.gate_proj.weight", I, H},   {"mlp.up_proj.weight", I, H},
        {"mlp.down_proj.weight", H, I},    {"input_layernorm.weight", H, 0},  {"post_attention_layernorm.weight", H, 0},
        {"pre_feedforward_layernorm.weight", H, 0}, {"post_feedforward_layernorm.weight", H, 0},
    };
    char name[256];
    for (int k = 0; k < 2; k++) {
        uint64_t shape[2] = {V, H};
        stetho_st_writer_declare(&w[k], "model.embed_tokens.weight", STETHO_DTYPE_BF16, 2, shape);
        for (int l = 0; l < L; l++)
            for (size_t m = 0; m < sizeof mods / sizeof mods[0]; m++) {
                snprintf(name, sizeof name, "model.layers.%d.%s", l, mods[m].name);
                uint64_t s[2] = {mods[m].a, mods[m].b};
                stetho_st_writer_declare(&w[k], name, STETHO_DTYPE_BF16, s[1] ? 2 : 1, s);
            }
        uint64_t hs[1] = {H};
        stetho_st_writer_declare(&w[k], "model.norm.weight", STETHO_DTYPE_BF16, 1, hs);
    }
    uint64_t total = (V * H + (uint64_t)L * (4 * H * H + 3 * H * I + 4 * H) + H);
    const size_t chunk = 1 << 20;
    uint16_t *a = malloc(chunk * 2), *b = malloc(chunk * 2);
    for (uint64_t done = 0; done < total; done += chunk) {
        size_t n = total - done < chunk ? (size_t)(total - done) : chunk;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = xorshift();
            float v = ((int32_t)(r & 0xffff) - 32768) * (0.02f / 32768.0f);
            a[i] = stetho_f32_to_bf16(v);
            float d = ((int32_t)(r >> 16) - 32768) * (0.0005f / 32768.0f);
            b[i] = stetho_f32_to_bf16(stetho_bf16_to_f32(a[i]) + d);
        }
        if (stetho_st_writer_write(&w[0], a, n * 2) || stetho_st_writer_write(&w[1], b, n * 2)) return -1;
    }
    free(a);
    free(b);
    if (stetho_st_writer_finish(&w[0]) || stetho_st_writer_finish(&w[1])) return -1;
    return L;
}

/* One SAELens SAE (width 64) per layer and features.json naming 8 of each. */
static int make_saes(const char *dir, const char *features, int L, int d) {
    const int w = 64;
    mkdir(dir, 0755);
    FILE *f = fopen(features, "w");
    if (!f) return -1;
    fputc('{', f);
    stetho_sae s = {.arch = STETHO_SAE_RELU, .d_model = d, .d_sae = w};
    s.W_enc = calloc((size_t)d * w, sizeof(float));
    s.W_dec = malloc((size_t)d * w * sizeof(float));
    s.b_enc = calloc((size_t)w, sizeof(float));
    s.b_dec = calloc((size_t)d, sizeof(float));
    int rc = s.W_enc && s.W_dec && s.b_enc && s.b_dec ? 0 : -1;
    for (int l = 0; l < L && !rc; l++) {
        for (size_t i = 0; i < (size_t)d * w; i++) s.W_dec[i] = ((int32_t)(xorshift() & 0xffff) - 32768) / 32768.0f;
        s.layer = l;
        snprintf(s.hook, sizeof s.hook, "blocks.%d.hook_resid_post", l);
        char p[4096];
        snprintf(p, sizeof p, "%s/layer_%d", dir, l);
        if (stetho_sae_save_saelens(&s, p, true)) rc = -1;
        fprintf(f, "%s\"%d\": [0, 3, 7, 11, 19, 23, 42, 63]", l ? ", " : "", l);
    }
    fputs("}\n", f);
    free(s.W_enc), free(s.W_dec), free(s.b_enc), free(s.b_dec);
    return fclose(f) == 0 ? rc : -1;
}

static uint64_t file_size(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* The baseline: read every input byte, write out_bytes to a file. */
static double baseline(const char **inputs, int n_in, const char *out, uint64_t out_bytes) {
    const size_t B = 8 << 20;
    char *buf = malloc(B);
    memset(buf, 1, B);
    sync(); /* start clean: the previous contender's dirty pages are not charged to this one */
    double t0 = now();
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint64_t written = 0;
    for (int i = 0; i < n_in; i++) {
        int fd = open(inputs[i], O_RDONLY);
        ssize_t k;
        while ((k = read(fd, buf, B)) > 0) {
            if (written < out_bytes) {
                size_t m = out_bytes - written < (uint64_t)k ? (size_t)(out_bytes - written) : (size_t)k;
                if (write(fo, buf, m) != (ssize_t)m) { perror("write"); exit(1); }
                written += m;
            }
        }
        close(fd);
    }
    while (written < out_bytes) {
        size_t m = out_bytes - written < B ? (size_t)(out_bytes - written) : B;
        if (write(fo, buf, m) != (ssize_t)m) { perror("write"); exit(1); }
        written += m;
    }
    close(fo);
    double t = now() - t0;
    unlink(out);
    free(buf);
    return t;
}

static long rss_anon_kb(pid_t pid) {
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "RssAnon:", 8)) v = strtol(line + 8, NULL, 10);
    fclose(f);
    return v;
}

/* Run argv, return wall seconds; *peak_kb = max RssAnon sampled every 5 ms. */
static double run(char *const argv[], long *peak_kb) {
    sync();
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    *peak_kb = 0;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        long kb = rss_anon_kb(pid);
        if (kb > *peak_kb) *peak_kb = kb;
        usleep(5000);
    }
    double t = now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_taskvec: %s failed\n", argv[1]);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_taskvec STETHO WORK_DIR [GB] [JSON_OUT]\n");
        return 2;
    }
    const char *stetho = argv[1];
    char work[1024];
    if (strlen(argv[2]) >= sizeof work) {
        fprintf(stderr, "bench_taskvec: WORK_DIR path too long\n");
        return 2;
    }
    snprintf(work, sizeof work, "%s", argv[2]);
    double gb = argc > 3 ? atof(argv[3]) : 2.0;
    const char *json = argc > 4 ? argv[4] : NULL;
    char base[1100], ft[1100], tv[1100], out[1100], scratch[1100], bst[1200], fst[1200];
    mkdir(work, 0755);
    snprintf(base, sizeof base, "%s/base", work);
    snprintf(ft, sizeof ft, "%s/ft", work);
    snprintf(tv, sizeof tv, "%s/tv.safetensors", work);
    snprintf(out, sizeof out, "%s/edited", work);
    snprintf(scratch, sizeof scratch, "%s/baseline.bin", work);
    snprintf(bst, sizeof bst, "%s/model.safetensors", base);
    snprintf(fst, sizeof fst, "%s/model.safetensors", ft);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s' '%s'", base, ft, tv, out);
    if (system(cmd) != 0) return 1;
    double t0 = now();
    int L = generate(base, ft, gb);
    if (L < 0) {
        fprintf(stderr, "bench_taskvec: generating the checkpoints failed: %s\n", stetho_last_error());
        return 1;
    }
    uint64_t model_bytes = file_size(bst);
    fprintf(stderr, "generated 2 x %.2f GB bf16 checkpoints (%d layers) in %.1f s\n", model_bytes / 1e9, L, now() - t0);

    /* warm the page cache equally for every contender */
    const char *in_diff[2] = {bst, fst};
    baseline(in_diff, 2, scratch, 0);
    long peak_diff, peak_edit;
    char *diff_argv[] = {(char *)stetho, "diff", base, ft, "-o", tv, NULL};
    double t_diff = run(diff_argv, &peak_diff);
    uint64_t tv_bytes = file_size(tv);
    double b_diff = baseline(in_diff, 2, scratch, tv_bytes);

    /* the scalpel: tau projected on 8 SAE decoder directions per layer (SAELens
     * SAEs of width 64, generated), bound by reading and writing tau */
    char saes[1100], feats[1100], ptv[1100];
    snprintf(saes, sizeof saes, "%s/saes", work);
    snprintf(feats, sizeof feats, "%s/features.json", work);
    snprintf(ptv, sizeof ptv, "%s/projected.safetensors", work);
    if (make_saes(saes, feats, L, 2048)) {
        fprintf(stderr, "bench_taskvec: generating SAEs failed: %s\n", stetho_last_error());
        return 1;
    }
    const char *in_proj[1] = {tv};
    baseline(in_proj, 1, scratch, 0);
    long peak_proj;
    char *proj_argv[] = {(char *)stetho, "project", "--task-vector", tv, "--sae-dir", saes, "--features-file", feats,
                         "-o", ptv, NULL};
    double t_proj = run(proj_argv, &peak_proj);
    double b_proj = baseline(in_proj, 1, scratch, file_size(ptv));

    const char *in_edit[2] = {bst, tv};
    baseline(in_edit, 2, scratch, 0);
    char *edit_argv[] = {(char *)stetho, "edit", base, "--task-vector", tv, "-o", out, NULL};
    double t_edit = run(edit_argv, &peak_edit);
    double b_edit = baseline(in_edit, 2, scratch, model_bytes);

    double in_d = 2.0 * model_bytes, in_e = (double)model_bytes + tv_bytes;
    printf("%-34s %10s %10s %8s %12s\n", "benchmark", "stetho s", "baseline s", "ratio", "peak anon MB");
    printf("%-34s %10.2f %10.2f %8.2f %12.1f\n", "diff (read 2 bf16, write f32 tau)", t_diff, b_diff, t_diff / b_diff,
           peak_diff / 1024.0);
    printf("%-34s %10.2f %10.2f %8.2f %12.1f\n", "edit (read base+tau, write bf16)", t_edit, b_edit, t_edit / b_edit,
           peak_edit / 1024.0);
    printf("%-34s %10.2f %10.2f %8.2f %12.1f\n", "project (read tau, write P tau)", t_proj, b_proj, t_proj / b_proj,
           peak_proj / 1024.0);
    printf("diff %.2f GB/s read+write, edit %.2f GB/s (baseline: plain read()+write() of the same bytes)\n",
           (in_d + tv_bytes) / t_diff / 1e9, (in_e + model_bytes) / t_edit / 1e9);
    /* machine-readable lines for bench/run.sh's summary: name, value, unit, baseline, ratio (lower is better) */
    printf("RESULT\ttaskvec_diff_%.1fGB\t%.3f\ts\t%.3f\t%.3f\n", model_bytes / 1e9, t_diff, b_diff, t_diff / b_diff);
    printf("RESULT\ttaskvec_edit_%.1fGB\t%.3f\ts\t%.3f\t%.3f\n", model_bytes / 1e9, t_edit, b_edit, t_edit / b_edit);
    printf("RESULT\tproject_%.1fGB_tau\t%.3f\ts\t%.3f\t%.3f\n", tv_bytes / 1e9, t_proj, b_proj, t_proj / b_proj);
    printf("RESULT\tproject_peak_anon\t%.1f\tMB\t512\t%.3f\n", peak_proj / 1024.0, peak_proj / 1024.0 / 512);
    printf("RESULT\ttaskvec_diff_peak_anon\t%.1f\tMB\t512\t%.3f\n", peak_diff / 1024.0, peak_diff / 1024.0 / 512);
    printf("RESULT\ttaskvec_edit_peak_anon\t%.1f\tMB\t512\t%.3f\n", peak_edit / 1024.0, peak_edit / 1024.0 / 512);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f,
                    "[{\"name\": \"taskvec_diff\", \"seconds\": %.4f, \"baseline_seconds\": %.4f, \"ratio\": %.4f, "
                    "\"peak_anon_mb\": %.1f, \"model_gb\": %.3f},\n"
                    " {\"name\": \"taskvec_edit\", \"seconds\": %.4f, \"baseline_seconds\": %.4f, \"ratio\": %.4f, "
                    "\"peak_anon_mb\": %.1f, \"model_gb\": %.3f}]\n",
                    t_diff, b_diff, t_diff / b_diff, peak_diff / 1024.0, model_bytes / 1e9, t_edit, b_edit,
                    t_edit / b_edit, peak_edit / 1024.0, model_bytes / 1e9);
            fclose(f);
        }
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s' '%s' '%s' '%s' '%s' '%s'", base, ft, tv, out, saes, feats, ptv);
    return system(cmd) == 0 ? 0 : 1;
}
