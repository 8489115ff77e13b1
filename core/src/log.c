/*
 * Runtime log lines.  A host that cannot take calls from foreign threads
 * (LuaJIT inside nginx) queues them and drains them on its own thread;
 * other hosts get a callback on the logging thread, or stderr.
 */

#include <stdarg.h>
#include <string.h>

#include "nbffi_int.h"


static const char *nbffi__level_name(int level);


void
nbffi_log(nbffi_queue_t *q, int level, const char *msg, size_t len)
{
    nbffi_host_t       *host;
    nbffi__log_line_t  *line, *old;

    if (q == NULL || msg == NULL || len == 0) {
        return;
    }

    host = q->rt->host;

    if (len > NBFFI__LOG_MAX_LEN) {
        len = NBFFI__LOG_MAX_LEN;
    }

    if (!(host->flags & NBFFI_HOST_LOG_QUEUE)) {
        pthread_mutex_lock(&host->log_lock);
        if (host->gone) {
            /* void: freed while an orphan runtime lives, see host.c */
        } else if (host->log_cb != NULL) {
            host->log_cb(host->log_ud, level, msg, len);
        } else {
            fprintf(stderr, "nbffi [%s] %.*s\n", nbffi__level_name(level),
                    (int) len, msg);
        }
        pthread_mutex_unlock(&host->log_lock);
        return;
    }

    line = malloc(sizeof(nbffi__log_line_t) + len + 1);
    if (line == NULL) {
        return;
    }

    line->next = NULL;
    line->level = level;
    line->len = len;
    memcpy(line->msg, msg, len);
    line->msg[len] = '\0';

    old = NULL;

    pthread_mutex_lock(&host->log_lock);

    if (host->gone) {
        pthread_mutex_unlock(&host->log_lock);
        free(line);
        return;
    }

    if (host->log_count == NBFFI__LOG_MAX_LINES) {
        old = host->log_head;
        host->log_head = old->next;
        host->log_count--;
        host->log_dropped++;
    }

    if (host->log_tail == NULL || host->log_head == NULL) {
        host->log_head = line;
    } else {
        host->log_tail->next = line;
    }
    host->log_tail = line;
    host->log_count++;

    /* Wake the host as a completion would; under the lock, so that
     * nbffi_host_free never closes the notifier under this write. */
    if (!atomic_exchange(&host->signaled, 1)) {
        nbffi__host_notify(host);
    }

    pthread_mutex_unlock(&host->log_lock);

    free(old);
}


void
nbffi_logf(nbffi_queue_t *q, int level, const char *fmt, ...)
{
    int      n;
    char     buf[NBFFI__LOG_MAX_LEN];
    va_list  ap;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    if (n < 0) {
        return;
    }

    nbffi_log(q, level, buf,
              (size_t) n < sizeof(buf) ? (size_t) n : sizeof(buf) - 1);
}


int
nbffi_host_log_next(nbffi_host_t *host, int *level, char *buf, size_t len,
    uint64_t *dropped)
{
    size_t              n;
    nbffi__log_line_t  *line;

    if (buf == NULL || len < 2) {
        return NBFFI_EINVAL;
    }

    pthread_mutex_lock(&host->log_lock);

    if (dropped != NULL) {
        *dropped = host->log_dropped;
        host->log_dropped = 0;
    }

    line = host->log_head;
    if (line != NULL) {
        host->log_head = line->next;
        if (host->log_head == NULL) {
            host->log_tail = NULL;
        }
        host->log_count--;
    }

    pthread_mutex_unlock(&host->log_lock);

    if (line == NULL) {
        return 0;
    }

    if (level != NULL) {
        *level = line->level;
    }

    n = line->len < len - 1 ? line->len : len - 1;
    memcpy(buf, line->msg, n);
    buf[n] = '\0';
    free(line);

    return (int) n;
}


void
nbffi_host_set_log(nbffi_host_t *host, nbffi_log_cb cb, void *ud)
{
    pthread_mutex_lock(&host->log_lock);
    host->log_cb = cb;
    host->log_ud = ud;
    pthread_mutex_unlock(&host->log_lock);
}


void
nbffi__log_destroy(nbffi_host_t *host)
{
    nbffi__log_line_t  *line, *next;

    for (line = host->log_head; line != NULL; line = next) {
        next = line->next;
        free(line);
    }

    host->log_head = NULL;
    host->log_tail = NULL;
    host->log_count = 0;
}


static const char *
nbffi__level_name(int level)
{
    switch (level) {
    case NBFFI_LOG_ERR:
        return "error";
    case NBFFI_LOG_WARN:
        return "warn";
    case NBFFI_LOG_NOTICE:
        return "notice";
    case NBFFI_LOG_INFO:
        return "info";
    default:
        return "debug";
    }
}
