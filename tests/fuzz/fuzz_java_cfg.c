/*
 * libFuzzer: the Java loader's cfg parser, nbj_cfg_parse() (shims/java/
 * native/cfg.c, compiled in unchanged; it needs no JVM).
 *
 * Input: one byte choosing the size of the error buffer (1..256), then
 * the cfg.  Checked: a failure leaves a NUL-terminated, non-empty message
 * and an empty cfg; a success a class name and sane numbers, and every
 * string it parsed is freed (LeakSanitizer).
 */

#include "../../shims/java/native/cfg.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int        rc;
    char      *err;
    size_t     err_len, i;
    nbj_cfg_t  cfg;

    if (size == 0) {
        return 0;
    }

    err_len = (size_t) data[0] + 1;
    err = malloc(err_len);
    if (err == NULL) {
        return 0;
    }
    memset(err, 'X', err_len);

    rc = nbj_cfg_parse(&cfg, (const char *) data + 1, size - 1, err,
                       err_len);

    if (rc == 0) {
        if (cfg.class_name == NULL || cfg.class_name[0] == '\0'
            || cfg.threads < 1 || cfg.threads > NBJ_MAX_THREADS
            || cfg.batch < 1 || cfg.batch > NBJ_MAX_BATCH)
        {
            abort();
        }
        for (i = 0; i < cfg.n_classpath; i++) {
            if (cfg.classpath[i][0] == '\0') {
                abort();
            }
        }
        nbj_cfg_free(&cfg);

    } else if (memchr(err, '\0', err_len) == NULL
               || (err_len > 1 && err[0] == '\0')
               || cfg.class_name != NULL || cfg.n_classpath != 0)
    {
        abort();
    }

    free(err);
    return 0;
}
