/*
 * The cfg of a Java runtime: "key=value" lines.  Blank lines and lines
 * starting with '#' are skipped; spaces around keys and values are
 * trimmed.  Keys (see shims/java/README.md):
 *
 *   class=NAME            handler class (required)
 *   classpath=A:B         jars or directories; repeatable
 *   jvm_option=OPT        JVM option; repeatable (only when creating it)
 *   java_home=DIR         JDK or JRE whose libjvm to load (idem)
 *   executor=platform|virtual
 *   threads=N             poller threads (1..64)
 *   batch=N               tasks per pop (1..256)
 *   close_timeout=MS      how long close waits for calls in flight
 *   log_level=LEVEL       java.util.logging root level
 *   arg.NAME=VALUE        handler configuration (Methods.config())
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbj.h"


static int nbj_cfg_line(nbj_cfg_t *cfg, char *line, unsigned lineno,
    char *err, size_t err_len);
static int nbj_cfg_push(char ***list, size_t *n, const char *s, size_t len);
static int nbj_cfg_set(char **field, const char *key, const char *value,
    unsigned lineno, char *err, size_t err_len);
static int nbj_cfg_int(long *out, const char *key, const char *value,
    long min, long max, unsigned lineno, char *err, size_t err_len);
static char *nbj_cfg_trim(char *s);
static int nbj_cfg_error(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


int
nbj_cfg_parse(nbj_cfg_t *cfg, const char *text, size_t len, char *err,
    size_t err_len)
{
    char      *buf, *line, *next;
    unsigned   lineno;

    memset(cfg, 0, sizeof(*cfg));
    cfg->threads = -1;
    cfg->batch = -1;
    cfg->close_timeout_ms = 10000;

    if (memchr(text, '\0', len) != NULL) {
        return nbj_cfg_error(err, err_len, "cfg holds a NUL byte");
    }

    buf = malloc(len + 1);
    if (buf == NULL) {
        return nbj_cfg_error(err, err_len, "out of memory");
    }
    memcpy(buf, text, len);
    buf[len] = '\0';

    for (line = buf, lineno = 1; line != NULL; line = next, lineno++) {
        next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        if (nbj_cfg_line(cfg, line, lineno, err, err_len) != 0) {
            free(buf);
            nbj_cfg_free(cfg);
            return -1;
        }
    }
    free(buf);

    if (cfg->class_name == NULL) {
        nbj_cfg_free(cfg);
        return nbj_cfg_error(err, err_len,
                             "cfg lacks class=NAME (the handler class)");
    }
    if (cfg->threads < 0) {
        cfg->threads = cfg->virtual_threads ? 1 : 2;
    }
    if (cfg->batch < 0) {
        cfg->batch = cfg->virtual_threads ? 64 : 1;
    }
    return 0;
}


void
nbj_cfg_free(nbj_cfg_t *cfg)
{
    size_t  i;

    for (i = 0; i < cfg->n_classpath; i++) {
        free(cfg->classpath[i]);
    }
    for (i = 0; i < cfg->n_jvm_options; i++) {
        free(cfg->jvm_options[i]);
    }
    for (i = 0; i < cfg->n_args; i++) {
        free(cfg->args[i]);
    }
    free(cfg->classpath);
    free(cfg->jvm_options);
    free(cfg->args);
    free(cfg->class_name);
    free(cfg->java_home);
    free(cfg->log_level);
    memset(cfg, 0, sizeof(*cfg));
}


static int
nbj_cfg_line(nbj_cfg_t *cfg, char *line, unsigned lineno, char *err,
    size_t err_len)
{
    char  *eq, *key, *value, *p, *colon;
    int    rc;
    long   n;

    line = nbj_cfg_trim(line);
    if (*line == '\0' || *line == '#') {
        return 0;
    }
    eq = strchr(line, '=');
    if (eq == NULL) {
        return nbj_cfg_error(err, err_len,
                             "cfg line %u: expected key=value, got '%s'",
                             lineno, line);
    }
    *eq = '\0';
    key = nbj_cfg_trim(line);
    value = nbj_cfg_trim(eq + 1);
    if (*value == '\0') {
        return nbj_cfg_error(err, err_len, "cfg line %u: empty value for '%s'",
                             lineno, key);
    }

    if (strcmp(key, "class") == 0) {
        return nbj_cfg_set(&cfg->class_name, key, value, lineno, err,
                           err_len);
    }
    if (strcmp(key, "java_home") == 0) {
        return nbj_cfg_set(&cfg->java_home, key, value, lineno, err, err_len);
    }
    if (strcmp(key, "log_level") == 0) {
        return nbj_cfg_set(&cfg->log_level, key, value, lineno, err, err_len);
    }

    if (strcmp(key, "classpath") == 0) {
        for (p = value; p != NULL; p = colon) {
            colon = strchr(p, ':');
            if (colon != NULL) {
                *colon++ = '\0';
            }
            if (*p != '\0'
                && nbj_cfg_push(&cfg->classpath, &cfg->n_classpath, p,
                                strlen(p)) != 0)
            {
                return nbj_cfg_error(err, err_len, "out of memory");
            }
        }
        return 0;
    }
    if (strcmp(key, "jvm_option") == 0) {
        if (nbj_cfg_push(&cfg->jvm_options, &cfg->n_jvm_options, value,
                         strlen(value)) != 0)
        {
            return nbj_cfg_error(err, err_len, "out of memory");
        }
        return 0;
    }
    if (strncmp(key, "arg.", 4) == 0 && key[4] != '\0') {
        /* Stored as "NAME=VALUE", the form Bridge.start takes. */
        if (asprintf(&p, "%s=%s", key + 4, value) < 0) {
            return nbj_cfg_error(err, err_len, "out of memory");
        }
        rc = nbj_cfg_push(&cfg->args, &cfg->n_args, p, strlen(p));
        free(p);
        if (rc != 0) {
            return nbj_cfg_error(err, err_len, "out of memory");
        }
        return 0;
    }

    if (strcmp(key, "executor") == 0) {
        if (strcmp(value, "platform") == 0) {
            cfg->virtual_threads = 0;
        } else if (strcmp(value, "virtual") == 0) {
            cfg->virtual_threads = 1;
        } else {
            return nbj_cfg_error(err, err_len, "cfg line %u: executor must be"
                                 " 'platform' or 'virtual', got '%s'",
                                 lineno, value);
        }
        return 0;
    }
    if (strcmp(key, "threads") == 0) {
        if (nbj_cfg_int(&n, key, value, 1, NBJ_MAX_THREADS, lineno, err,
                        err_len) != 0)
        {
            return -1;
        }
        cfg->threads = (int) n;
        return 0;
    }
    if (strcmp(key, "batch") == 0) {
        if (nbj_cfg_int(&n, key, value, 1, NBJ_MAX_BATCH, lineno, err,
                        err_len) != 0)
        {
            return -1;
        }
        cfg->batch = (int) n;
        return 0;
    }
    if (strcmp(key, "close_timeout") == 0) {
        return nbj_cfg_int(&cfg->close_timeout_ms, key, value, 0,
                           24L * 3600 * 1000, lineno, err, err_len);
    }

    return nbj_cfg_error(err, err_len, "cfg line %u: unknown key '%s'",
                         lineno, key);
}


static int
nbj_cfg_push(char ***list, size_t *n, const char *s, size_t len)
{
    char  **l, *copy;

    copy = strndup(s, len);
    if (copy == NULL) {
        return -1;
    }
    l = realloc(*list, (*n + 1) * sizeof(char *));
    if (l == NULL) {
        free(copy);
        return -1;
    }
    l[(*n)++] = copy;
    *list = l;
    return 0;
}


static int
nbj_cfg_set(char **field, const char *key, const char *value,
    unsigned lineno, char *err, size_t err_len)
{
    if (*field != NULL) {
        return nbj_cfg_error(err, err_len, "cfg line %u: '%s' given twice",
                             lineno, key);
    }
    *field = strdup(value);
    if (*field == NULL) {
        return nbj_cfg_error(err, err_len, "out of memory");
    }
    return 0;
}


static int
nbj_cfg_int(long *out, const char *key, const char *value, long min,
    long max, unsigned lineno, char *err, size_t err_len)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(value, &end, 10);
    if (errno != 0 || *end != '\0' || n < min || n > max) {
        return nbj_cfg_error(err, err_len, "cfg line %u: %s must be an"
                             " integer in %ld..%ld, got '%s'",
                             lineno, key, min, max, value);
    }
    *out = n;
    return 0;
}


static char *
nbj_cfg_trim(char *s)
{
    char  *end;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    end = s + strlen(s);
    while (end > s
           && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
    {
        *--end = '\0';
    }
    return s;
}


static int
nbj_cfg_error(char *err, size_t err_len, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    (void) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return -1;
}
