/*
 * libFuzzer: the C reference runtime's cfg parser, echo_parse_cfg().
 * shims/c/echo.c is compiled into this file unchanged, to reach the static
 * parser; nothing else of it runs.
 *
 * Input: one byte choosing the size of the error buffer (1..256, exactly
 * that many bytes, so that ASan sees any write past it), then the cfg.
 * Checked: a failure writes a NUL-terminated message within the buffer
 * (empty only for "fail=", the test hook of an empty init message); a
 * success leaves a thread count in 1..16.
 */

#include "../../shims/c/echo.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int         rc;
    char       *err;
    size_t      err_len;
    echo_rt_t   rt;

    if (size == 0) {
        return 0;
    }

    err_len = (size_t) data[0] + 1;
    err = malloc(err_len);
    if (err == NULL) {
        return 0;
    }
    memset(err, 'X', err_len);

    memset(&rt, 0, sizeof(rt));
    rt.nthreads = 1;

    rc = echo_parse_cfg(&rt, (const char *) data + 1, size - 1, err,
                        err_len);

    if (rc == 0) {
        if (rt.nthreads < 1 || rt.nthreads > ECHO_MAX_THREADS) {
            abort();
        }
    } else if (rc != -1 || memchr(err, '\0', err_len) == NULL
               || (err_len > 1 && err[0] == '\0'
                   && memmem(data + 1, size - 1, "fail=", 5) == NULL))
    {
        abort();
    }

    free(err);
    return 0;
}
