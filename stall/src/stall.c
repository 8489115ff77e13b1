/*
 * The stall detector: a watchdog thread and LuaJIT's profiler hook.
 *
 * A stalled loop thread cannot report on itself, and LuaJIT's own profiler
 * timer (ITIMER_PROF) counts process CPU time, so it neither ticks while
 * the loop sleeps in a system call nor tells a stall from a busy loop.
 * Here the profiler runs with its timer disarmed, and the watchdog asks for
 * each sample while, and only while, the heartbeat is late:
 *
 *   - the loop thread is on a CPU (state R): the watchdog sends it SIGPROF
 *     with tgkill.  LuaJIT's handler runs on the loop thread, as it does
 *     for its own timer, and sets the profiler hook; the VM takes the
 *     sample at its next safe point (compiled code checks at each new
 *     line, since the profiler runs in line mode);
 *   - the loop thread sleeps in the kernel (state S or D): a signal would
 *     cut poll(), nanosleep() and friends short (EINTR), so the watchdog
 *     runs LuaJIT's handler itself, on its own thread, by raising SIGPROF
 *     to itself.  This is how LuaJIT's profiler works where it uses a
 *     timer thread (Windows); the loop thread, asleep, does not touch the
 *     hook state meanwhile.  The sample is taken when the blocking call
 *     returns to Lua: its backtrace is the Lua code that called it.
 *
 * Each sample carries the loop thread's CPU and off-CPU time since the
 * sample before it, so a backtrace taken after a blocking call carries
 * the wait of that call.
 *
 * SIGPROF safety: LuaJIT restores the handler it found when its profiler
 * stops (lua_close stops it before any finalizer runs).  A harmless handler
 * of this library is installed first, so a late SIGPROF never meets the
 * default action (which kills the process); -z nodelete keeps it mapped.
 *
 * Threads: "loop" is the thread that runs the Lua VM, "watchdog" ours.
 * Shared state is atomics; the sample table is the loop thread's alone.
 */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>

#include "nbffi_stall.h"


#define STALL_MAX_STACKS    64
#define STALL_ARENA         (64 * 1024)
#define STALL_CONTEXT_MAX   512
#define STALL_URI_MAX       200

/* A sample asked this many ticks ago and not taken is asked again: the
 * profiler skips a request that arrives while the VM is in a hook or in
 * a __gc finalizer. */
#define STALL_PENDING_TICKS 8

/* Frames as "where\037name\036", innermost first ('p': full paths). */
#define STALL_DUMP_FMT      "pl\037f\036"

/* lua-nginx-module's phase bits (ngx_http_lua_ffi_get_phase). */
#define STALL_PHASE_TIMER   0x0080

/* State of the stall in progress.  The watchdog moves IDLE -> SUSPECT,
 * the loop everything else, within one heartbeat: so the report of one
 * stall never hides the next one. */
enum {
    STALL_IDLE = 0,         /* heartbeat on time */
    STALL_SUSPECT,          /* heartbeat late: sampling */
    STALL_DONE              /* ended, reportable: the loop reads, releases */
};


typedef void *(*stall_getexdata_pt)(lua_State *L);
typedef int (*stall_get_phase_pt)(void *r, char **err);
typedef int (*stall_var_get_pt)(void *r, const char *name, size_t len,
    char *lowcase, int capture_id, char **value, size_t *value_len,
    char **err);

typedef struct {
    uint64_t  hash;
    uint32_t  context_off;
    uint32_t  context_len;
    uint32_t  frames_off;
    uint32_t  frames_len;
    uint32_t  samples;
    uint32_t  vm[NBFFI_STALL_VM_MAX];
    uint64_t  cpu_ns;
    uint64_t  wait_ns;
    uint64_t  runq_ns;
} stall_stack_t;

typedef struct {
    /* Set by start on the loop thread before the watchdog exists (or by
     * the watchdog's creation), read-only while it runs. */
    uint64_t            threshold_ns;
    uint64_t            tick_ns;
    uint64_t            beat_ns;
    uint64_t            suspect_ns;     /* heartbeat age that starts sampling */
    uint64_t            check_ns;       /* the watchdog's look, no stall */
    int                 depth;
    pid_t               pid;
    pid_t               tid;            /* the loop thread */
    clockid_t           cpu_clock;      /* its CPU clock */
    int                 stat_fd;        /* its /proc stat and schedstat */
    int                 sched_fd;
    void              (*lj_handler)(int);   /* LuaJIT's SIGPROF handler */
    const char         *beat_source;    /* the heartbeat function: samples */
    int                 beat_line;      /* taken in it are late ones */
    stall_getexdata_pt  getexdata;      /* optional: OpenResty's LuaJIT */
    stall_get_phase_pt  get_phase;      /* optional: lua-nginx-module */
    stall_var_get_pt    var_get;
    pthread_t           watchdog;

    /* The watchdog's sleep; lock order: just this one. */
    pthread_mutex_t     lock;
    pthread_cond_t      cond;
    int                 quit;

    atomic_int          running;

    /* Heartbeat, a seqlock: the loop writes, the watchdog reads. */
    atomic_uint_fast64_t  beat_seq;
    atomic_uint_fast64_t  beat_wall;
    atomic_uint_fast64_t  beat_cpu;

    /* The stall in progress. */
    atomic_int            state;
    atomic_int            want;         /* a sample asked, not taken yet */
    atomic_uint_fast64_t  acc_cpu;      /* since the last sample: on a CPU, */
    atomic_uint_fast64_t  acc_off;      /* asleep in the kernel, */
    atomic_uint_fast64_t  acc_runq;     /* waiting for a CPU */
    /* The watchdog writes these, then state := SUSPECT. */
    uint64_t              start_seq;    /* heartbeats before the stall */
    uint64_t              start_wall;
    uint64_t              start_cpu;
    uint64_t              start_runq;
    /* The loop writes this at the first heartbeat after the stall. */
    nbffi_stall_report_t  report;

    /* Loop thread only: the samples of the stall in progress. */
    stall_stack_t         stacks[STALL_MAX_STACKS];
    uint32_t              nstacks;
    uint32_t              samples;
    uint32_t              lost;
    uint32_t              vm[NBFFI_STALL_VM_MAX];
    size_t                arena_used;
    char                  arena[STALL_ARENA];

    /* Counters (nbffi_stall_stats). */
    atomic_uint_fast64_t  n_beats;
    atomic_uint_fast64_t  n_stalls;
    atomic_uint_fast64_t  n_suspects;
    atomic_uint_fast64_t  n_samples;
    atomic_uint_fast64_t  n_signals;
    atomic_uint_fast64_t  n_wakes;
    atomic_uint_fast64_t  n_spurious;
    atomic_uint_fast64_t  n_late;
} stall_t;


static uint64_t stall_now(clockid_t clock);
static void stall_beat_read(uint64_t *seq, uint64_t *wall, uint64_t *cpu);
static char stall_thread_state(void);
static uint64_t stall_runq(void);
static int stall_handler_is_luajit(void);
static void stall_ask(char state);
static void stall_account(uint64_t cpu, uint64_t wall, char state);
static int stall_finish(uint64_t seq, uint64_t wall, uint64_t cpu);
static void *stall_watchdog(void *arg);
static void stall_sigprof_ignore(int sig);
static void stall_noop_hook(lua_State *L, lua_Debug *ar);
static void stall_repair_dispatch(lua_State *L);
static int stall_in_beat(lua_State *L);
static size_t stall_context(lua_State *L, char *buf, size_t size);
static void stall_record(const char *context, size_t context_len,
    const char *frames, size_t frames_len, int vm, uint64_t cpu,
    uint64_t off, uint64_t runq);
static void stall_sample(void *data, lua_State *L, int samples,
    int vmstate);
static void stall_reset(void);
static int stall_fail(lua_State *L, const char *what, int err);
static void stall_join(void);
static int stall_thread_create(pthread_t *t);


/* One per process, as LuaJIT's profiler state is. */
static stall_t  st = {
    .stat_fd = -1,
    .sched_fd = -1,
    .lock = PTHREAD_MUTEX_INITIALIZER,
};


NBFFI_STALL_EXTERN unsigned
nbffi_stall_abi(void)
{
    return NBFFI_STALL_ABI;
}


/* Any thread. */
static uint64_t
stall_now(clockid_t clock)
{
    struct timespec  ts;

    if (clock_gettime(clock, &ts) != 0) {
        return 0;
    }

    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}


/* Watchdog: the last heartbeat, consistent (the loop may be writing). */
static void
stall_beat_read(uint64_t *seq, uint64_t *wall, uint64_t *cpu)
{
    uint64_t  s1, s2;

    for ( ;; ) {
        s1 = atomic_load_explicit(&st.beat_seq, memory_order_acquire);
        *wall = atomic_load_explicit(&st.beat_wall, memory_order_relaxed);
        *cpu = atomic_load_explicit(&st.beat_cpu, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        s2 = atomic_load_explicit(&st.beat_seq, memory_order_relaxed);
        if (s1 == s2 && (s1 & 1) == 0) {
            *seq = s1 / 2;
            return;
        }
    }
}


/* Watchdog: the loop thread's scheduler state (R, S, D, ...), '?' if
 * unknown. */
static char
stall_thread_state(void)
{
    char      buf[512], *p;
    ssize_t   n;

    n = pread(st.stat_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) {
        return '?';
    }
    buf[n] = '\0';

    /* "tid (comm) S ...": comm may hold spaces and parentheses. */
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ') {
        return '?';
    }

    return p[2];
}


/* Watchdog: ns the loop thread has waited on a run queue so far, 0 when
 * the kernel does not say (no schedstat). */
static uint64_t
stall_runq(void)
{
    char                buf[128];
    ssize_t             n;
    unsigned long long  run, wait;

    if (st.sched_fd < 0) {
        return 0;
    }

    n = pread(st.sched_fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';

    if (sscanf(buf, "%llu %llu", &run, &wait) != 2) {
        return 0;
    }

    return wait;
}


/* Watchdog: SIGPROF still goes to LuaJIT's handler (nobody replaced it). */
static int
stall_handler_is_luajit(void)
{
    struct sigaction  sa;

    if (sigaction(SIGPROF, NULL, &sa) != 0) {
        return 0;
    }

    return !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == st.lj_handler;
}


/* Watchdog: asks the VM for a sample at its next safe point. */
static void
stall_ask(char state)
{
    sigset_t  prof;

    if (!stall_handler_is_luajit()) {
        return;
    }

    atomic_store_explicit(&st.want, 1, memory_order_release);

    /* A stall that has just ended may have the loop back in epoll_wait()
     * (a signal there is an EINTR, which nginx logs at info level): the
     * last look at the state, right before acting, keeps that window
     * small. */
    if (atomic_load_explicit(&st.state, memory_order_acquire)
        != STALL_SUSPECT)
    {
        return;
    }

    if (state == 'R' || state == '?') {
        /* On a CPU (or runnable): the handler runs on the loop thread,
         * between two of its instructions, as with LuaJIT's own timer. */
        (void) syscall(SYS_tgkill, st.pid, st.tid, SIGPROF);
        atomic_fetch_add_explicit(&st.n_signals, 1, memory_order_relaxed);
        return;
    }

    /* Asleep in the kernel: set the hook from here; a signal would
     * interrupt its system call. */
    (void) sigemptyset(&prof);
    (void) sigaddset(&prof, SIGPROF);
    (void) pthread_sigmask(SIG_UNBLOCK, &prof, NULL);
    (void) syscall(SYS_tgkill, st.pid, (pid_t) syscall(SYS_gettid), SIGPROF);
    (void) pthread_sigmask(SIG_BLOCK, &prof, NULL);

    atomic_fetch_add_explicit(&st.n_wakes, 1, memory_order_relaxed);
}


/*
 * Watchdog: time of the loop thread since the last look: CPU by its
 * clock, the rest as run-queue wait when it is runnable now, else as
 * sleep in the kernel (a guess per tick; the stall's total run-queue time
 * comes from schedstat).
 */
static void
stall_account(uint64_t cpu, uint64_t wall, char state)
{
    uint64_t  off;

    off = wall > cpu ? wall - cpu : 0;

    atomic_fetch_add_explicit(&st.acc_cpu, cpu, memory_order_relaxed);
    atomic_fetch_add_explicit(state == 'R' ? &st.acc_runq : &st.acc_off,
                              off, memory_order_relaxed);
}


/*
 * Loop thread, at the first heartbeat (number seq) after a stall: its
 * header.  Returns whether it is reported.
 */
static int
stall_finish(uint64_t seq, uint64_t wall, uint64_t cpu)
{
    uint64_t  runq, own;

    st.report.seq = atomic_load_explicit(&st.n_stalls, memory_order_relaxed)
                    + 1;
    st.report.start_ns = st.start_wall;
    st.report.wall_ns = wall - st.start_wall;
    st.report.cpu_ns = cpu > st.start_cpu ? cpu - st.start_cpu : 0;

    runq = stall_runq();
    st.report.runq_ns = runq > st.start_runq ? runq - st.start_runq : 0;
    if (st.report.runq_ns > st.report.wall_ns) {
        st.report.runq_ns = st.report.wall_ns;
    }

    /* Time the loop spent waiting for a CPU is the machine's doing, not
     * the code's: it does not count towards the threshold.  A heartbeat
     * that came while the watchdog was deciding (seq not the next one)
     * means the loop was not stalled. */
    own = st.report.wall_ns - st.report.runq_ns;
    if (own >= st.threshold_ns && seq == st.start_seq + 1) {
        atomic_fetch_add_explicit(&st.n_stalls, 1, memory_order_relaxed);
        return 1;
    }

    atomic_fetch_add_explicit(&st.n_suspects, 1, memory_order_relaxed);
    return 0;
}


static void *
stall_watchdog(void *arg)
{
    int              state, quit;
    char             tstate;
    uint64_t         now, seq, wall, cpu, cpu_now, last_cpu, last_wall;
    uint64_t         runq_prev = 0, pending = 0, step, dc, runq, off;
    struct timespec  ts;

    (void) arg;

    last_cpu = 0;
    last_wall = 0;

    for ( ;; ) {
        state = atomic_load_explicit(&st.state, memory_order_acquire);
        step = state == STALL_SUSPECT ? st.tick_ns : st.check_ns;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long) (step % 1000000000u);
        ts.tv_sec += (time_t) (step / 1000000000u + ts.tv_nsec / 1000000000);
        ts.tv_nsec %= 1000000000;

        (void) pthread_mutex_lock(&st.lock);
        while (!st.quit) {
            if (pthread_cond_timedwait(&st.cond, &st.lock, &ts) == ETIMEDOUT) {
                break;
            }
        }
        quit = st.quit;
        (void) pthread_mutex_unlock(&st.lock);

        if (quit) {
            return NULL;
        }

        now = stall_now(CLOCK_MONOTONIC);
        stall_beat_read(&seq, &wall, &cpu);
        state = atomic_load_explicit(&st.state, memory_order_acquire);

        switch (state) {

        case STALL_IDLE:
            if (now < wall + st.suspect_ns) {
                runq_prev = stall_runq();
                break;
            }

            /* Late: sample from now on.  The time since the heartbeat
             * goes with the first sample. */
            st.start_seq = seq;
            st.start_wall = wall;
            st.start_cpu = cpu;
            st.start_runq = runq_prev;

            /* The time since the heartbeat goes with the first sample;
             * its run-queue part is known from schedstat. */
            cpu_now = stall_now(st.cpu_clock);
            dc = cpu_now > cpu ? cpu_now - cpu : 0;
            runq = stall_runq();
            runq = runq > runq_prev ? runq - runq_prev : 0;
            off = now - wall > dc ? now - wall - dc : 0;
            runq = runq < off ? runq : off;
            atomic_store_explicit(&st.acc_cpu, dc, memory_order_relaxed);
            atomic_store_explicit(&st.acc_off, off - runq,
                                  memory_order_relaxed);
            atomic_store_explicit(&st.acc_runq, runq, memory_order_relaxed);
            last_cpu = cpu_now;
            last_wall = now;
            pending = 0;
            atomic_store_explicit(&st.state, STALL_SUSPECT,
                                  memory_order_release);
            stall_ask(stall_thread_state());
            break;

        case STALL_SUSPECT:
            tstate = stall_thread_state();
            cpu_now = stall_now(st.cpu_clock);
            stall_account(cpu_now > last_cpu ? cpu_now - last_cpu : 0,
                          now - last_wall, tstate);
            last_cpu = cpu_now;
            last_wall = now;

            if (!atomic_load_explicit(&st.want, memory_order_acquire)
                || ++pending >= STALL_PENDING_TICKS)
            {
                pending = 0;
                stall_ask(tstate);
            }
            break;

        default:    /* DONE: the loop is reading it */
            break;
        }
    }
}


/* The SIGPROF handler LuaJIT restores when its profiler stops. */
static void
stall_sigprof_ignore(int sig)
{
    (void) sig;
}


/* A count hook that never fires (see stall_repair_dispatch). */
static void
stall_noop_hook(lua_State *L, lua_Debug *ar)
{
    (void) L;
    (void) ar;
}


/*
 * Loop thread, in the profiler hook.  A hook nobody asked for may come
 * from a dispatch table left half-updated by the watchdog's hook request
 * racing the VM's own update (its trace recorder); rewriting the table
 * through a hook change puts it right.  The user's hook is kept.
 */
static void
stall_repair_dispatch(lua_State *L)
{
    lua_Hook  hook;
    int       mask, count;

    hook = lua_gethook(L);
    mask = lua_gethookmask(L);
    count = lua_gethookcount(L);

    (void) lua_sethook(L, hook != NULL ? hook : stall_noop_hook,
                       LUA_MASKCOUNT, 0x7fffffff);
    (void) lua_sethook(L, hook, mask, count);
}


/* Loop thread, in the hook: the VM runs the heartbeat function, so the
 * stall has ended and the sample is a late one. */
static int
stall_in_beat(lua_State *L)
{
    lua_Debug  ar;

    if (lua_getstack(L, 0, &ar) == 0 || lua_getinfo(L, "S", &ar) == 0) {
        return 0;
    }

    return ar.source == st.beat_source && ar.linedefined == st.beat_line;
}


/*
 * Loop thread, in the hook: what runs, from lua-nginx-module's request
 * object of the running coroutine: "PHASE METHOD URI" for requests,
 * "timer SOURCE:LINE" (the callback) for timers, "unknown" elsewhere.
 * Only functions that read the request are called.
 */
static size_t
stall_context(lua_State *L, char *buf, size_t size)
{
    static const char  *names[] = {
        "set", "rewrite", "access", "content", "log", "header_filter",
        "body_filter", "timer", "init_worker", "balancer", "ssl_cert",
        "ssl_session_store", "ssl_session_fetch", "exit_worker",
        "ssl_client_hello", "server_rewrite"
    };
    char         lowcase[16], *err, *method, *uri;
    size_t       method_len, uri_len, i;
    int          phase, n, level;
    void        *r;
    const char  *name;
    lua_Debug    ar;

    r = st.getexdata != NULL ? st.getexdata(L) : NULL;
    if (r == NULL || st.get_phase == NULL) {
        return (size_t) snprintf(buf, size, "unknown");
    }

    phase = st.get_phase(r, &err);
    name = "unknown";
    for (i = 0; phase > 0 && i < sizeof(names) / sizeof(names[0]); i++) {
        if (phase == 1 << i) {
            name = names[i];
        }
    }

    if (phase == STALL_PHASE_TIMER) {
        /* The bottom frame is the timer's callback. */
        for (level = 0; lua_getstack(L, level + 1, &ar); level++) {
            /* void */
        }
        if (lua_getstack(L, level, &ar) && lua_getinfo(L, "S", &ar)) {
            n = snprintf(buf, size, "timer %s:%d", ar.short_src,
                         ar.linedefined);
            return n < 0 ? 0 : ((size_t) n < size ? (size_t) n : size - 1);
        }
    }

    if (phase > 0 && phase != STALL_PHASE_TIMER && st.var_get != NULL
        && st.var_get(r, "request_method", 14, lowcase, 0, &method,
                      &method_len, &err) == 0
        && st.var_get(r, "request_uri", 11, lowcase, 0, &uri, &uri_len,
                      &err) == 0)
    {
        n = snprintf(buf, size, "%s %.*s %.*s%s", name, (int) method_len,
                     method, (int) (uri_len > STALL_URI_MAX ? STALL_URI_MAX
                                                            : uri_len),
                     uri, uri_len > STALL_URI_MAX ? "..." : "");
    } else {
        n = snprintf(buf, size, "%s", name);
    }

    return n < 0 ? 0 : ((size_t) n < size ? (size_t) n : size - 1);
}


/* Loop thread: adds a sample to the stall's table. */
static void
stall_record(const char *context, size_t context_len, const char *frames,
    size_t frames_len, int vm, uint64_t cpu, uint64_t off, uint64_t runq)
{
    uint32_t        i;
    uint64_t        h;
    size_t          k;
    stall_stack_t  *s;

    st.samples++;
    st.vm[vm]++;

    /* FNV-1a over context, NUL, frames. */
    h = 1469598103934665603ull;
    for (k = 0; k < context_len; k++) {
        h = (h ^ (unsigned char) context[k]) * 1099511628211ull;
    }
    h *= 1099511628211ull;
    for (k = 0; k < frames_len; k++) {
        h = (h ^ (unsigned char) frames[k]) * 1099511628211ull;
    }

    for (i = 0; i < st.nstacks; i++) {
        s = &st.stacks[i];
        if (s->hash == h && s->context_len == context_len
            && s->frames_len == frames_len
            && memcmp(st.arena + s->context_off, context, context_len) == 0
            && memcmp(st.arena + s->frames_off, frames, frames_len) == 0)
        {
            goto found;
        }
    }

    if (st.nstacks == STALL_MAX_STACKS
        || STALL_ARENA - st.arena_used < context_len + frames_len)
    {
        st.lost++;
        return;
    }

    s = &st.stacks[st.nstacks++];
    memset(s, 0, sizeof(*s));
    s->hash = h;
    s->context_off = (uint32_t) st.arena_used;
    s->context_len = (uint32_t) context_len;
    memcpy(st.arena + st.arena_used, context, context_len);
    st.arena_used += context_len;
    s->frames_off = (uint32_t) st.arena_used;
    s->frames_len = (uint32_t) frames_len;
    memcpy(st.arena + st.arena_used, frames, frames_len);
    st.arena_used += frames_len;

found:

    s->samples++;
    s->vm[vm]++;
    s->cpu_ns += cpu;
    s->wait_ns += off;
    s->runq_ns += runq;
}


/* Loop thread: LuaJIT's profiler callback, at a VM safe point. */
static void
stall_sample(void *data, lua_State *L, int samples, int vmstate)
{
    int          vm;
    char         context[STALL_CONTEXT_MAX];
    size_t       context_len, frames_len;
    uint64_t     cpu, off, runq;
    const char  *frames;

    (void) data;
    (void) samples;

    if (!atomic_load_explicit(&st.want, memory_order_acquire)) {
        atomic_fetch_add_explicit(&st.n_spurious, 1, memory_order_relaxed);
        stall_repair_dispatch(L);
        return;
    }

    if (atomic_load_explicit(&st.state, memory_order_acquire)
            != STALL_SUSPECT
        || stall_in_beat(L))
    {
        atomic_fetch_add_explicit(&st.n_late, 1, memory_order_relaxed);
        atomic_store_explicit(&st.want, 0, memory_order_release);
        return;
    }

    switch (vmstate) {
    case 'N': vm = NBFFI_STALL_VM_COMPILED; break;
    case 'I': vm = NBFFI_STALL_VM_INTERP; break;
    case 'G': vm = NBFFI_STALL_VM_GC; break;
    case 'J': vm = NBFFI_STALL_VM_JIT; break;
    default: vm = NBFFI_STALL_VM_C; break;
    }

    cpu = atomic_exchange_explicit(&st.acc_cpu, 0, memory_order_relaxed);
    off = atomic_exchange_explicit(&st.acc_off, 0, memory_order_relaxed);
    runq = atomic_exchange_explicit(&st.acc_runq, 0, memory_order_relaxed);

    context_len = stall_context(L, context, sizeof(context));
    frames = luaJIT_profile_dumpstack(L, STALL_DUMP_FMT, st.depth,
                                      &frames_len);

    stall_record(context, context_len, frames, frames_len, vm, cpu, off,
                 runq);
    atomic_fetch_add_explicit(&st.n_samples, 1, memory_order_relaxed);

    atomic_store_explicit(&st.want, 0, memory_order_release);
}


/* Loop thread: empties the table; the watchdog may start the next stall. */
static void
stall_reset(void)
{
    st.nstacks = 0;
    st.samples = 0;
    st.lost = 0;
    st.arena_used = 0;
    memset(st.vm, 0, sizeof(st.vm));
    atomic_store_explicit(&st.want, 0, memory_order_relaxed);
    atomic_store_explicit(&st.state, STALL_IDLE, memory_order_release);
}


NBFFI_STALL_EXTERN int
nbffi_stall_beat(void)
{
    int       state;
    uint64_t  wall, cpu, seq;

    if (!atomic_load_explicit(&st.running, memory_order_relaxed)) {
        return NBFFI_STALL_ENOTRUNNING;
    }

    wall = stall_now(CLOCK_MONOTONIC);
    cpu = stall_now(CLOCK_THREAD_CPUTIME_ID);

    seq = atomic_load_explicit(&st.beat_seq, memory_order_relaxed);
    atomic_store_explicit(&st.beat_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&st.beat_wall, wall, memory_order_relaxed);
    atomic_store_explicit(&st.beat_cpu, cpu, memory_order_relaxed);
    atomic_store_explicit(&st.beat_seq, seq + 2, memory_order_release);
    atomic_fetch_add_explicit(&st.n_beats, 1, memory_order_relaxed);

    state = atomic_load_explicit(&st.state, memory_order_acquire);

    if (state == STALL_DONE) {
        return 1;           /* not collected by the beat that ended it */
    }
    if (state != STALL_SUSPECT) {
        return 0;
    }

    /* The first heartbeat after the stall: its end. */
    if (stall_finish(seq / 2 + 1, wall, cpu)) {
        atomic_store_explicit(&st.state, STALL_DONE, memory_order_release);
        return 1;
    }

    stall_reset();
    return 0;
}


NBFFI_STALL_EXTERN int
nbffi_stall_report(nbffi_stall_report_t *out)
{
    if (atomic_load_explicit(&st.state, memory_order_acquire) != STALL_DONE
        || out == NULL)
    {
        return -EINVAL;
    }

    *out = st.report;
    out->samples = st.samples;
    out->lost = st.lost;
    out->nstacks = st.nstacks;
    memcpy(out->vm, st.vm, sizeof(out->vm));

    return 0;
}


NBFFI_STALL_EXTERN int
nbffi_stall_stack(uint32_t i, nbffi_stall_stack_t *out)
{
    stall_stack_t  *s;

    if (atomic_load_explicit(&st.state, memory_order_acquire) != STALL_DONE
        || out == NULL || i >= st.nstacks)
    {
        return -EINVAL;
    }

    s = &st.stacks[i];
    out->context = st.arena + s->context_off;
    out->context_len = s->context_len;
    out->frames = st.arena + s->frames_off;
    out->frames_len = s->frames_len;
    out->samples = s->samples;
    memcpy(out->vm, s->vm, sizeof(out->vm));
    out->cpu_ns = s->cpu_ns;
    out->wait_ns = s->wait_ns;
    out->runq_ns = s->runq_ns;

    return 0;
}


NBFFI_STALL_EXTERN void
nbffi_stall_release(void)
{
    if (atomic_load_explicit(&st.state, memory_order_acquire) == STALL_DONE) {
        stall_reset();
    }
}


NBFFI_STALL_EXTERN void
nbffi_stall_stats(nbffi_stall_stats_t *out)
{
    out->running = atomic_load(&st.running);
    out->beats = atomic_load(&st.n_beats);
    out->stalls = atomic_load(&st.n_stalls);
    out->suspects = atomic_load(&st.n_suspects);
    out->samples = atomic_load(&st.n_samples);
    out->signals = atomic_load(&st.n_signals);
    out->wakes = atomic_load(&st.n_wakes);
    out->spurious = atomic_load(&st.n_spurious);
    out->late = atomic_load(&st.n_late);
}


/* Loop thread: nil, "what: strerror(err)" for a Lua C function. */
static int
stall_fail(lua_State *L, const char *what, int err)
{
    lua_pushnil(L);
    if (err != 0) {
        lua_pushfstring(L, "%s: %s", what, strerror(err));
    } else {
        lua_pushstring(L, what);
    }
    return 2;
}


/*
 * The watchdog never takes nginx's signals: all are blocked around
 * pthread_create (so it is never exposed) but the synchronous ones.  This
 * is nbffi_thread_create's mask, not its call: libnbffi_stall does not
 * need libnbffi.
 */
static int
stall_thread_create(pthread_t *t)
{
    int       rc;
    sigset_t  all, old;

    (void) sigfillset(&all);
    (void) sigdelset(&all, SIGILL);
    (void) sigdelset(&all, SIGFPE);
    (void) sigdelset(&all, SIGSEGV);
    (void) sigdelset(&all, SIGBUS);

    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        return rc;
    }

    rc = pthread_create(t, NULL, stall_watchdog, NULL);

    if (pthread_sigmask(SIG_SETMASK, &old, NULL) != 0) {
        abort();    /* the loop thread would keep every signal blocked */
    }

    return rc;
}


/* Loop thread: stops and joins the watchdog, closes its files. */
static void
stall_join(void)
{
    (void) pthread_mutex_lock(&st.lock);
    st.quit = 1;
    (void) pthread_cond_signal(&st.cond);
    (void) pthread_mutex_unlock(&st.lock);

    (void) pthread_join(st.watchdog, NULL);
    (void) pthread_cond_destroy(&st.cond);

    if (st.stat_fd >= 0) {
        (void) close(st.stat_fd);
        st.stat_fd = -1;
    }
    if (st.sched_fd >= 0) {
        (void) close(st.sched_fd);
        st.sched_fd = -1;
    }
}


NBFFI_STALL_EXTERN int
nbffi_stall_lua_start(lua_State *L)
{
    int                 rc;
    char                path[64];
    lua_Debug           ar;
    pthread_condattr_t  ca;
    struct sigaction    sa, ign;
    struct itimerval    off;

    if (atomic_load(&st.running)) {
        return stall_fail(L, "already running", 0);
    }

    st.threshold_ns = (uint64_t) luaL_checknumber(L, 1) * 1000u;
    st.tick_ns = (uint64_t) luaL_checknumber(L, 2) * 1000u;
    st.beat_ns = (uint64_t) luaL_checknumber(L, 3) * 1000u;
    st.depth = (int) luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TFUNCTION);

    if (st.threshold_ns == 0 || st.tick_ns == 0 || st.beat_ns == 0
        || st.depth <= 0)
    {
        return luaL_error(L, "bad arguments to start");
    }

    /* Late heartbeats start sampling halfway to the threshold, so that a
     * stall just over it still gets samples. */
    st.suspect_ns = st.beat_ns + st.threshold_ns / 2;

    /* No stall: a look every quarter threshold starts sampling between
     * half and three quarters of it; fewer looks cost less CPU. */
    st.check_ns = st.threshold_ns / 4 > st.beat_ns ? st.threshold_ns / 4
                                                   : st.beat_ns;

    lua_pushvalue(L, 5);
    if (lua_getinfo(L, ">S", &ar) == 0) {
        return stall_fail(L, "cannot inspect the heartbeat function", 0);
    }
    st.beat_source = ar.source;
    st.beat_line = ar.linedefined;

    /* lua-nginx-module and OpenResty's LuaJIT, when there. */
    st.getexdata = (stall_getexdata_pt) dlsym(RTLD_DEFAULT, "lua_getexdata");
    st.get_phase = (stall_get_phase_pt)
                   dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_get_phase");
    st.var_get = (stall_var_get_pt)
                 dlsym(RTLD_DEFAULT, "ngx_http_lua_ffi_var_get");

    /* SIGPROF: free, or ours from an earlier start. */
    if (sigaction(SIGPROF, NULL, &sa) != 0) {
        return stall_fail(L, "sigaction(SIGPROF)", errno);
    }
    if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler != SIG_DFL
        && sa.sa_handler != SIG_IGN && sa.sa_handler != stall_sigprof_ignore)
    {
        return stall_fail(L, "SIGPROF has a handler already (another "
                          "profiler runs: jit.profile, jit.p?)", 0);
    }

    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = stall_sigprof_ignore;
    ign.sa_flags = SA_RESTART;
    (void) sigemptyset(&ign.sa_mask);
    if (sigaction(SIGPROF, &ign, NULL) != 0) {
        return stall_fail(L, "sigaction(SIGPROF)", errno);
    }

    st.pid = getpid();
    st.tid = (pid_t) syscall(SYS_gettid);

    rc = pthread_getcpuclockid(pthread_self(), &st.cpu_clock);
    if (rc != 0) {
        return stall_fail(L, "pthread_getcpuclockid", rc);
    }

    (void) snprintf(path, sizeof(path), "/proc/self/task/%d/stat",
                    (int) st.tid);
    st.stat_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (st.stat_fd < 0) {
        return stall_fail(L, "open /proc/self/task/TID/stat", errno);
    }

    /* Optional: kernels without schedstats give no run-queue time. */
    (void) snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat",
                    (int) st.tid);
    st.sched_fd = open(path, O_RDONLY | O_CLOEXEC);

    luaJIT_profile_start(L, "l", stall_sample, NULL);

    if (sigaction(SIGPROF, NULL, &sa) != 0 || (sa.sa_flags & SA_SIGINFO)
        || sa.sa_handler == stall_sigprof_ignore)
    {
        rc = errno;
        (void) close(st.stat_fd);
        st.stat_fd = -1;
        if (st.sched_fd >= 0) {
            (void) close(st.sched_fd);
            st.sched_fd = -1;
        }
        return stall_fail(L, "LuaJIT's profiler did not start (built "
                          "without it?)", 0);
    }
    st.lj_handler = sa.sa_handler;

    /* Samples are asked by the watchdog only: no CPU timer. */
    memset(&off, 0, sizeof(off));
    (void) setitimer(ITIMER_PROF, &off, NULL);

    stall_reset();
    atomic_store(&st.n_beats, 0);
    atomic_store(&st.n_stalls, 0);
    atomic_store(&st.n_suspects, 0);
    atomic_store(&st.n_samples, 0);
    atomic_store(&st.n_signals, 0);
    atomic_store(&st.n_wakes, 0);
    atomic_store(&st.n_spurious, 0);
    atomic_store(&st.n_late, 0);
    atomic_store(&st.running, 1);
    (void) nbffi_stall_beat();

    st.quit = 0;
    (void) pthread_condattr_init(&ca);
    (void) pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    (void) pthread_cond_init(&st.cond, &ca);
    (void) pthread_condattr_destroy(&ca);

    rc = stall_thread_create(&st.watchdog);
    if (rc != 0) {
        atomic_store(&st.running, 0);
        (void) pthread_cond_destroy(&st.cond);
        luaJIT_profile_stop(L);
        (void) close(st.stat_fd);
        st.stat_fd = -1;
        if (st.sched_fd >= 0) {
            (void) close(st.sched_fd);
            st.sched_fd = -1;
        }
        return stall_fail(L, "pthread_create", rc);
    }

    lua_pushboolean(L, 1);
    return 1;
}


NBFFI_STALL_EXTERN int
nbffi_stall_lua_stop(lua_State *L)
{
    if (atomic_exchange(&st.running, 0)) {
        stall_join();
        luaJIT_profile_stop(L);
        stall_reset();
    }

    lua_pushboolean(L, 1);
    return 1;
}


NBFFI_STALL_EXTERN void
nbffi_stall_shutdown(void)
{
    if (atomic_exchange(&st.running, 0)) {
        stall_join();
    }
}
