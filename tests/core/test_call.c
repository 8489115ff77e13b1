/* nbffi_call(): what a post carries, its limits and its errors. */

#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_DEFAULT_QUEUE    65536
#define T_DEFAULT_PAYLOAD  (64ull << 20)

/* A host with a t_ctl runtime loaded with the given limits. */
static struct t_fx *
t_fx_limits(void **state, uint32_t max_queue, uint64_t max_payload)
{
    struct t_fx  *fx;

    fx = *state;
    assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    fx->rt = t_load_ctl(fx->host, max_queue, max_payload, &fx->q);
    fx->allocated = nbffi_host_tasks_allocated(fx->host);

    return fx;
}

static int
t_call_rc(struct t_fx *fx, const char *method, size_t mlen,
    const void *payload, size_t plen, unsigned flags)
{
    int            rc;
    nbffi_task_t  *task;

    task = NULL;
    rc = nbffi_call(fx->host, fx->rt, method, mlen, payload, plen, 0, flags,
                    &task);

    if (rc == 0) {
        assert_non_null(task);
        nbffi_task_release(task);
    }

    return rc;
}

/* A refused call leaves no trace: posted and allocated count the calls
 * accepted since the setup. */
static void
t_no_effect(struct t_fx *fx, uint64_t posted, uint64_t allocated)
{
    assert_int_equal(t_stats(fx->rt).posted, posted);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host),
                     fx->allocated + allocated);
}

/* Plays the runtime: answers a popped task, so that none is left held. */
static void
t_answer(nbffi_task_t *task)
{
    assert_int_equal(nbffi_task_respond(task, 0, NULL, 0), 0);
}

static void
test_call_posts(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task;
    nbffi_stats_t   st;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");

    st = t_stats(fx->rt);
    assert_int_equal(st.posted, 1);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 1);

    nbffi_task_release(task);
}

static void
test_call_closed(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(nbffi_runtime_closed(fx->rt), 0);
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_int_equal(nbffi_runtime_closed(fx->rt), 1);

    assert_int_equal(t_call_rc(fx, "m", 1, "p", 1, 0), NBFFI_ECLOSED);
    t_no_effect(fx, 0, 0);
}

static void
test_close_twice_refused(void **state)
{
    unsigned       finis;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;
    finis = t_ctl_get()->finis;

    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);

    /* The second close starts nothing and hands out no task. */
    task = NULL;
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, &task), NBFFI_EALREADY);
    assert_null(task);
    assert_int_equal(nbffi_runtime_closed(fx->rt), 1);
    assert_int_equal(nbffi_queue_closed(fx->q), 1);

    assert_int_equal(nbffi_runtime_wait(fx->rt, 0), NBFFI_RT_CLOSED);
    assert_int_equal(t_ctl_get()->finis, finis + 1);
}

static void
test_call_queue_full(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *a, *b;

    fx = t_fx_limits(state, 2, 0);

    a = t_call(fx->host, fx->rt, "m", "1");
    b = t_call(fx->host, fx->rt, "m", "2");
    assert_int_equal(t_call_rc(fx, "m", 1, "3", 1, 0), NBFFI_EQFULL);

    assert_int_equal(t_stats(fx->rt).refused, 1);
    t_no_effect(fx, 2, 2);

    nbffi_task_release(a);
    nbffi_task_release(b);
}

static void
test_call_queue_full_frees_on_pop(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *a;

    fx = t_fx_limits(state, 1, 0);

    a = t_call(fx->host, fx->rt, "m", "1");
    assert_int_equal(t_call_rc(fx, "m", 1, "2", 1, 0), NBFFI_EQFULL);

    /* max_queue bounds queued tasks, not tasks in flight. */
    assert_ptr_equal(t_pop1(fx->q), a);
    assert_int_equal(t_call_rc(fx, "m", 1, "2", 1, 0), 0);

    t_answer(a);
    nbffi_task_release(a);
}

static void
test_call_default_max_queue(void **state)
{
    int             i;
    struct t_fx    *fx;
    nbffi_task_t  **task;

    fx = *state;
    task = calloc(T_DEFAULT_QUEUE, sizeof(*task));
    assert_non_null(task);

    for (i = 0; i < T_DEFAULT_QUEUE; i++) {
        assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0, 0, 0,
                                    &task[i]), 0);
    }

    assert_int_equal(t_call_rc(fx, "m", 1, NULL, 0, 0), NBFFI_EQFULL);

    for (i = 0; i < T_DEFAULT_QUEUE; i++) {
        nbffi_task_release(task[i]);
    }
    free(task);
}

static void
test_call_payload_limit(void **state)
{
    char          buf[17];
    struct t_fx  *fx;

    fx = t_fx_limits(state, 0, 16);
    memset(buf, 'p', sizeof(buf));

    assert_int_equal(t_call_rc(fx, "m", 1, buf, 16, 0), 0);
    assert_int_equal(t_call_rc(fx, "m", 1, buf, 17, 0), NBFFI_E2BIG);
    assert_int_equal(t_call_rc(fx, "m", 1, buf, 17, NBFFI_CALL_BORROW),
                     NBFFI_E2BIG);
    t_no_effect(fx, 1, 1);
}

static void
test_call_default_max_payload(void **state)
{
    char          *big;
    struct t_fx   *fx;

    fx = *state;

    /* Borrowed, so that nothing is copied; calloc maps zero pages lazily. */
    big = calloc(1, T_DEFAULT_PAYLOAD + 1);
    assert_non_null(big);

    assert_int_equal(t_call_rc(fx, "m", 1, big, T_DEFAULT_PAYLOAD + 1,
                               NBFFI_CALL_BORROW), NBFFI_E2BIG);
    /* Released at once: big may go, the runtime never sees the task. */
    assert_int_equal(t_call_rc(fx, "m", 1, big, T_DEFAULT_PAYLOAD,
                               NBFFI_CALL_BORROW), 0);
    free(big);
}

static void
test_call_method_limit(void **state)
{
    char           m[NBFFI_MAX_METHOD + 1];
    size_t         len;
    const char    *seen;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;
    memset(m, 'm', sizeof(m));

    assert_int_equal(t_call_rc(fx, m, NBFFI_MAX_METHOD + 1, "p", 1, 0),
                     NBFFI_E2BIG);
    t_no_effect(fx, 0, 0);

    assert_int_equal(nbffi_call(fx->host, fx->rt, m, NBFFI_MAX_METHOD, "p", 1,
                                0, 0, &task), 0);

    seen = nbffi_task_method(t_pop1(fx->q), &len);
    assert_int_equal(len, NBFFI_MAX_METHOD);
    assert_memory_equal(seen, m, NBFFI_MAX_METHOD);
    assert_int_equal(seen[NBFFI_MAX_METHOD], '\0');

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_call_empty_method(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(t_call_rc(fx, "", 0, "p", 1, 0), NBFFI_EINVAL);
    t_no_effect(fx, 0, 0);
}

static void
test_call_copies_payload(void **state)
{
    char           buf[4] = "abc";
    size_t         len;
    const void    *seen;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, buf, 3, 0, 0,
                                &task), 0);
    memcpy(buf, "xyz", 3);

    seen = nbffi_task_payload(t_pop1(fx->q), &len);
    assert_ptr_not_equal(seen, buf);
    assert_int_equal(len, 3);
    assert_memory_equal(seen, "abc", 3);

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_call_borrow_payload(void **state)
{
    char           buf[4] = "abc";
    size_t         len;
    const void    *seen;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, buf, 3, 0,
                                NBFFI_CALL_BORROW, &task), 0);

    seen = nbffi_task_payload(t_pop1(fx->q), &len);
    assert_ptr_equal(seen, buf);
    assert_int_equal(len, 3);

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_call_binary_payload(void **state)
{
    size_t         len;
    const void    *seen;
    struct t_fx   *fx;
    nbffi_task_t  *task;
    const char     p[] = { '\0', 'a', '\0', '\xff' };

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, p, sizeof(p), 0, 0,
                                &task), 0);

    seen = nbffi_task_payload(t_pop1(fx->q), &len);
    assert_int_equal(len, sizeof(p));
    assert_memory_equal(seen, p, sizeof(p));

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_call_empty_payload(void **state)
{
    size_t         len;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0, 0, 0,
                                &task), 0);

    len = 99;
    (void) nbffi_task_payload(t_pop1(fx->q), &len);
    assert_int_equal(len, 0);

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_call_binary_method(void **state)
{
    size_t         len;
    const char    *seen;
    struct t_fx   *fx;
    nbffi_task_t  *task;
    const char     m[] = { 'a', '\x01', '\xff', ' ' };

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, m, sizeof(m), NULL, 0, 0, 0,
                                &task), 0);

    seen = nbffi_task_method(t_pop1(fx->q), &len);
    assert_int_equal(len, sizeof(m));
    assert_memory_equal(seen, m, sizeof(m));
    assert_int_equal(seen[len], '\0');

    t_answer(task);
    nbffi_task_release(task);
}

static void
test_task_ids_unique(void **state)
{
    int            i, j;
    uint64_t       id[8];
    struct t_fx   *fx;
    nbffi_task_t  *task[8];

    fx = *state;

    for (i = 0; i < 8; i++) {
        task[i] = t_call(fx->host, fx->rt, "m", "p");
        id[i] = nbffi_task_id(task[i]);
        assert_true(id[i] != 0);

        for (j = 0; j < i; j++) {
            assert_true(id[i] != id[j]);
        }
    }

    /* The runtime sees the same id. */
    assert_int_equal(nbffi_task_id(t_pop1(fx->q)), id[0]);
    t_answer(task[0]);

    for (i = 0; i < 8; i++) {
        nbffi_task_release(task[i]);
    }
}

static void
test_task_ids_unique_across_hosts(void **state)
{
    struct t_fx    *fx;
    nbffi_host_t   *other;
    nbffi_task_t   *a, *b;

    fx = *state;

    /* Ids are per process, not per host: logs and traces rely on it. */
    assert_int_equal(nbffi_host_new(&other, 0), 0);
    a = t_call(fx->host, fx->rt, "m", "p");
    b = t_call(other, fx->rt, "m", "p");

    assert_true(nbffi_task_id(a) != nbffi_task_id(b));

    nbffi_task_release(a);
    nbffi_task_release(b);

    /* b completes on other, as closed, when the runtime closes. */
    assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    fx->rt = NULL;
    t_host_finish(other);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_FX(test_call_posts),
        T_FX(test_call_closed),
        T_FX(test_close_twice_refused),
        T_FX(test_call_queue_full),
        T_FX(test_call_queue_full_frees_on_pop),
        T_FX(test_call_default_max_queue),
        T_FX(test_call_payload_limit),
        T_FX(test_call_default_max_payload),
        T_FX(test_call_method_limit),
        T_FX(test_call_empty_method),
        T_FX(test_call_copies_payload),
        T_FX(test_call_borrow_payload),
        T_FX(test_call_binary_payload),
        T_FX(test_call_empty_payload),
        T_FX(test_call_binary_method),
        T_FX(test_task_ids_unique),
        T_FX(test_task_ids_unique_across_hosts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
