/* Error texts, version numbers, sizes and the clock. */

#include <string.h>

#include "harness.h"

#define T_UNKNOWN  (-3999)

static void
test_strerror_every_code(void **state)
{
    (void) state;

#define T_STRERROR(name, val, msg)                                           \
    assert_int_equal(NBFFI_##name, val);                                     \
    assert_string_equal(nbffi_strerror(NBFFI_##name), msg);
    NBFFI_ERRNO_MAP(T_STRERROR)
#undef T_STRERROR
}

static void
test_err_name_every_code(void **state)
{
    (void) state;

#define T_ERR_NAME(name, val, msg)                                           \
    assert_non_null(nbffi_err_name(val));                                    \
    assert_non_null(strstr(nbffi_err_name(val), #name));
    NBFFI_ERRNO_MAP(T_ERR_NAME)
#undef T_ERR_NAME
}

static void
test_strerror_unknown(void **state)
{
    const char  *s;

    (void) state;

    s = nbffi_strerror(T_UNKNOWN);
    assert_non_null(s);
    assert_true(s[0] != '\0');

#define T_NOT_KNOWN(name, val, msg)  assert_string_not_equal(s, msg);
    NBFFI_ERRNO_MAP(T_NOT_KNOWN)
#undef T_NOT_KNOWN
}

static void
test_err_name_unknown(void **state)
{
    const char  *s;

    (void) state;

    s = nbffi_err_name(T_UNKNOWN);
    assert_non_null(s);
    assert_true(s[0] != '\0');

#define T_NOT_NAMED(name, val, msg)  assert_null(strstr(s, #name));
    NBFFI_ERRNO_MAP(T_NOT_NAMED)
#undef T_NOT_NAMED
}

static void
test_version(void **state)
{
    (void) state;

    assert_int_equal(nbffi_version(),
                     (NBFFI_VERSION_MAJOR << 16)
                     | (NBFFI_VERSION_MINOR << 8) | NBFFI_VERSION_PATCH);
}

static void
test_abi_version(void **state)
{
    (void) state;

    assert_int_equal(nbffi_abi_version(), NBFFI_ABI_VERSION);
}

static void
test_sizes(void **state)
{
    (void) state;

    assert_true(nbffi_host_size() > 0);
    assert_true(nbffi_task_size() > 0);
}

static void
test_now_monotonic(void **state)
{
    int      i;
    int64_t  prev, now;

    (void) state;

    prev = nbffi_now_ns();
    assert_true(prev > 0);

    for (i = 0; i < 1000; i++) {
        now = nbffi_now_ns();
        assert_true(now >= prev);
        prev = now;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_every_code),
        cmocka_unit_test(test_err_name_every_code),
        cmocka_unit_test(test_strerror_unknown),
        cmocka_unit_test(test_err_name_unknown),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_abi_version),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_now_monotonic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
