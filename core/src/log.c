/*
 * Log lines of runtimes and of libnbffi itself.  A host that cannot take
 * calls from foreign threads (LuaJIT inside nginx) queues them and drains
 * them on its own thread; other hosts get a callback on the logging
 * thread, or stderr.
 */

#include <stdarg.h>
#include <string.h>

#include "nbffi_int.h"


static void nbffi__log_vprintf(nbffi__log_t *log, int level,
    const char *fmt, va_list ap);
static size_t nbffi__log_meta_text(char *out, const char *msg, size_t len,
    const char *meta, size_t meta_len);
static const char *nbffi__level_name(int level);


int
nbffi__log_init(nbffi__log_t *log, int queued, nbffi__done_t *wake)
{
    memset(log, 0, sizeof(nbffi__log_t));
    log->queued = queued;
    log->wake = wake;

    return pthread_mutex_init(&log->lock, NULL) == 0 ? 0 : NBFFI_ENOMEM;
}


void
nbffi__log_destroy(nbffi__log_t *log)
{
    nbffi__log_line_t  *line, *next;

    for (line = log->head; line != NULL; line = next) {
        next = line->next;
        free(line);
    }

    log->head = NULL;
    log->tail = NULL;
    log->count = 0;

    free(log->last);
    log->last = NULL;
}


/*
 * Host thread, when the host is freed while threads of an orphaned runtime
 * may still log: their lines are dropped from now on, and the lock stays.
 */
void
nbffi__log_gone(nbffi__log_t *log)
{
    pthread_mutex_lock(&log->lock);
    log->gone = 1;
    nbffi__log_destroy(log);
    pthread_mutex_unlock(&log->lock);
}


/* Any thread. */
void
nbffi__log_write(nbffi__log_t *log, int level, const char *msg, size_t len)
{
    nbffi__log_write_meta(log, level, msg, len, NULL, 0);
}


/*
 * Any thread.  A line with metadata (encoded as for nbffi_call_ex, may be
 * NULL): queued with the line, or written after it as text.
 */
void
nbffi__log_write_meta(nbffi__log_t *log, int level, const char *msg,
    size_t len, const char *meta, size_t meta_len)
{
    char                text[NBFFI__LOG_MAX_LEN + 2 * NBFFI_MAX_META + 8];
    nbffi__log_line_t  *line, *old;

    if (msg == NULL || len == 0) {
        return;
    }

    if (len > NBFFI__LOG_MAX_LEN) {
        len = NBFFI__LOG_MAX_LEN;
    }

    if (meta == NULL) {
        meta_len = 0;
    }

    if (!log->queued) {
        if (meta_len != 0) {
            len = nbffi__log_meta_text(text, msg, len, meta, meta_len);
            msg = text;
        }

        pthread_mutex_lock(&log->lock);
        if (log->gone) {
            /* void */
        } else if (log->cb != NULL) {
            log->cb(log->ud, level, msg, len);
        } else {
            fprintf(stderr, "nbffi [%s] %.*s\n", nbffi__level_name(level),
                    (int) len, msg);
        }
        pthread_mutex_unlock(&log->lock);
        return;
    }

    line = malloc(sizeof(nbffi__log_line_t) + len + 1 + meta_len);
    if (line == NULL) {
        return;
    }

    line->next = NULL;
    line->level = level;
    line->len = len;
    line->meta_len = meta_len;
    memcpy(line->msg, msg, len);
    line->msg[len] = '\0';
    if (meta_len != 0) {
        memcpy(line->msg + len + 1, meta, meta_len);
    }

    old = NULL;

    pthread_mutex_lock(&log->lock);

    if (log->gone) {
        pthread_mutex_unlock(&log->lock);
        free(line);
        return;
    }

    if (log->count == NBFFI__LOG_MAX_LINES) {
        old = log->head;
        log->head = old->next;
        log->count--;
        log->dropped++;
    }

    if (log->head == NULL) {
        log->head = line;
    } else {
        log->tail->next = line;
    }
    log->tail = line;
    log->count++;

    /* Under the lock, so that a host being freed (gone is set under it)
     * never closes the notifier under this write. */
    nbffi__done_wake(log->wake);

    pthread_mutex_unlock(&log->lock);

    free(old);
}


void
nbffi__log_printf(nbffi__log_t *log, int level, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    nbffi__log_vprintf(log, level, fmt, ap);
    va_end(ap);
}


static void
nbffi__log_vprintf(nbffi__log_t *log, int level, const char *fmt,
    va_list ap)
{
    int   n;
    char  buf[NBFFI__LOG_MAX_LEN];

    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n < 0) {
        return;
    }

    nbffi__log_write(log, level, buf,
                     (size_t) n < sizeof(buf) ? (size_t) n : sizeof(buf) - 1);
}


/* Host thread. */
int
nbffi__log_pending(nbffi__log_t *log)
{
    int  pending;

    pthread_mutex_lock(&log->lock);
    pending = (log->head != NULL);
    pthread_mutex_unlock(&log->lock);

    return pending;
}


void
nbffi_log(nbffi_queue_t *q, int level, const char *msg, size_t len)
{
    if (q != NULL) {
        nbffi__log_write(q->log, level, msg, len);
    }
}


void
nbffi_logf(nbffi_queue_t *q, int level, const char *fmt, ...)
{
    va_list  ap;

    if (q == NULL) {
        return;
    }

    va_start(ap, fmt);
    nbffi__log_vprintf(q->log, level, fmt, ap);
    va_end(ap);
}


int
nbffi_host_log_next(nbffi_host_t *host, int *level, char *buf, size_t len,
    uint64_t *dropped)
{
    size_t              n;
    nbffi__log_t       *log;
    nbffi__log_line_t  *line;

    if (buf == NULL || len < 2) {
        return NBFFI_EINVAL;
    }

    log = &host->log;

    pthread_mutex_lock(&log->lock);

    if (dropped != NULL) {
        *dropped = log->dropped;
        log->dropped = 0;
    }

    line = log->head;
    if (line != NULL) {
        log->head = line->next;
        if (log->head == NULL) {
            log->tail = NULL;
        }
        log->count--;
    }

    pthread_mutex_unlock(&log->lock);

    /* the previous line goes; this one stays for nbffi_host_log_meta */
    free(log->last);
    log->last = line;

    if (line == NULL) {
        return 0;
    }

    if (level != NULL) {
        *level = line->level;
    }

    n = line->len < len - 1 ? line->len : len - 1;
    memcpy(buf, line->msg, n);
    buf[n] = '\0';

    return (int) n;
}


const void *
nbffi_host_log_meta(nbffi_host_t *host, size_t *len)
{
    nbffi__log_line_t  *line = host->log.last;

    if (line == NULL || line->meta_len == 0) {
        if (len != NULL) {
            *len = 0;
        }
        return NULL;
    }

    if (len != NULL) {
        *len = line->meta_len;
    }
    return line->msg + line->len + 1;
}


/*
 * msg, then " (key: value, key: value)" into out, which holds
 * NBFFI__LOG_MAX_LEN + 2 * NBFFI_MAX_META + 8 bytes; returns the length.
 * A pair of k + v bytes takes k + v + 2 encoded and at most k + v + 4 as
 * text, and k + v + 2 >= 3: the text is less than twice the encoding.
 */
static size_t
nbffi__log_meta_text(char *out, const char *msg, size_t len,
    const char *meta, size_t meta_len)
{
    size_t       n, kl, vl;
    const char  *p, *end;

    memcpy(out, msg, len);
    n = len;

    out[n++] = ' ';
    out[n++] = '(';

    p = meta;
    end = meta + meta_len;
    while (p < end) {
        kl = strlen(p);
        vl = strlen(p + kl + 1);
        if (p != meta) {
            out[n++] = ',';
            out[n++] = ' ';
        }
        memcpy(out + n, p, kl);
        n += kl;
        out[n++] = ':';
        out[n++] = ' ';
        memcpy(out + n, p + kl + 1, vl);
        n += vl;
        p += kl + 1 + vl + 1;
    }

    out[n++] = ')';
    return n;
}


void
nbffi_host_set_log(nbffi_host_t *host, nbffi_log_cb cb, void *ud)
{
    pthread_mutex_lock(&host->log.lock);
    host->log.cb = cb;
    host->log.ud = ud;
    pthread_mutex_unlock(&host->log.lock);
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
