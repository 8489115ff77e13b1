/*
 * nbffi_stall: finds what blocks an event loop that runs LuaJIT code (an
 * nginx worker), from inside the process: no systemtap, no root.
 *
 * Two threads take part:
 *   - the "loop thread": the one thread that runs the Lua VM (the nginx
 *     worker's main thread).  It beats a heartbeat, and LuaJIT's profiler
 *     hook, on this thread, records the backtraces;
 *   - the watchdog: a thread of this library (all signals blocked) that
 *     sees the heartbeat go stale, asks for backtraces while the loop is
 *     stalled, and reads the loop thread's CPU clock and scheduler
 *     counters.
 *
 * One detector per process: LuaJIT's profiler, which this uses, is one per
 * process too.  Starting and stopping take the lua_State, so they are Lua C
 * functions (load them with package.loadlib); the rest is plain C for the
 * LuaJIT FFI.  Every function below names the thread that may call it.
 *
 * Errors: the C functions return 0 (or a count) on success and a negative
 * errno value on failure; the Lua C functions return true, or nil and a
 * message.
 */

#ifndef NBFFI_STALL_H
#define NBFFI_STALL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define NBFFI_STALL_EXTERN  __attribute__((visibility("default")))
#else
#define NBFFI_STALL_EXTERN
#endif

/* Bumped when a struct or a function below changes. */
#define NBFFI_STALL_ABI  1

/* What the VM was doing when a sample was asked for (LuaJIT's vmstate). */
enum {
    NBFFI_STALL_VM_COMPILED = 0,    /* a JIT-compiled trace */
    NBFFI_STALL_VM_INTERP,          /* the interpreter */
    NBFFI_STALL_VM_C,               /* a C function (or outside Lua) */
    NBFFI_STALL_VM_GC,              /* the garbage collector */
    NBFFI_STALL_VM_JIT,             /* the JIT compiler itself */
    NBFFI_STALL_VM_MAX
};

/* A finished stall.  Times are CLOCK_MONOTONIC nanoseconds. */
typedef struct {
    uint64_t  seq;          /* stalls seen since start, this one included */
    uint64_t  start_ns;     /* the last heartbeat before the stall */
    uint64_t  wall_ns;      /* from there to the first heartbeat after it */
    uint64_t  cpu_ns;       /* CPU time of the loop thread over wall_ns */
    uint64_t  runq_ns;      /* of wall_ns, waiting for a CPU (0: unknown) */
    uint32_t  samples;      /* backtraces taken */
    uint32_t  lost;         /* of those, not stored (table full) */
    uint32_t  nstacks;      /* distinct (context, backtrace) pairs */
    uint32_t  vm[NBFFI_STALL_VM_MAX];
} nbffi_stall_report_t;

/*
 * One distinct backtrace of a stall, with the time attributed to it: the
 * loop thread's time since the sample before it, on a CPU, asleep in the
 * kernel and waiting for a CPU (so a sample taken right after a blocking
 * call carries that call's wait).
 * frames: the frames innermost first, each "where\037name\036" (where is
 * file:line; name is empty or LuaJIT's name for the function).  The
 * strings stay valid until nbffi_stall_release().
 */
typedef struct {
    const char  *context;       /* "content GET /uri", "timer file:line" */
    size_t       context_len;
    const char  *frames;
    size_t       frames_len;
    uint32_t     samples;
    uint32_t     vm[NBFFI_STALL_VM_MAX];
    uint64_t     cpu_ns;
    uint64_t     wait_ns;       /* asleep in the kernel */
    uint64_t     runq_ns;       /* runnable, waiting for a CPU */
} nbffi_stall_stack_t;

typedef struct {
    int       running;
    uint64_t  beats;        /* heartbeats since start */
    uint64_t  stalls;       /* stalls reported */
    uint64_t  suspects;     /* late heartbeats that did not reach the
                               threshold (or that waited for a CPU) */
    uint64_t  samples;      /* backtraces taken */
    uint64_t  signals;      /* samples asked with SIGPROF to the loop */
    uint64_t  wakes;        /* samples asked while the loop slept */
    uint64_t  spurious;     /* profiler hooks nobody asked for */
    uint64_t  late;         /* hooks that ran after their stall ended */
} nbffi_stall_stats_t;

struct lua_State;

/* Any thread.  NBFFI_STALL_ABI of the library. */
NBFFI_STALL_EXTERN unsigned nbffi_stall_abi(void);

/*
 * Loop thread, as a Lua C function:
 *   ok, err = start(threshold_us, tick_us, beat_us, depth, beat_fn)
 * Starts LuaJIT's profiler on this VM (line mode, so that compiled code
 * checks for samples at each new line; its CPU timer is disarmed: samples
 * are only taken during stalls) and the watchdog.  The caller must call
 * nbffi_stall_beat() every beat_us from beat_fn, a function it keeps
 * alive: a stall is a heartbeat late by threshold_us or more.  Samples
 * are asked every tick_us while the loop is stalled; depth is the most
 * frames kept per backtrace.  Fails when running already, when SIGPROF
 * has a handler that is not LuaJIT's or this library's (another
 * profiler), or when a thread or file cannot be had.
 */
NBFFI_STALL_EXTERN int nbffi_stall_lua_start(struct lua_State *L);

/*
 * Loop thread, as a Lua C function: stop().  Joins the watchdog, then
 * stops LuaJIT's profiler (which flushes the compiled traces).  A stall
 * not collected yet is dropped.  Returns true (also when not running).
 */
NBFFI_STALL_EXTERN int nbffi_stall_lua_stop(struct lua_State *L);

/*
 * Loop thread.  The heartbeat.  Returns 1 when a finished stall waits to
 * be read (nbffi_stall_report, _stack, then _release), 0 otherwise,
 * NBFFI_STALL_ENOTRUNNING (-ESRCH) when not started.
 */
NBFFI_STALL_EXTERN int nbffi_stall_beat(void);

/* Loop thread, after nbffi_stall_beat() returned 1.  Copies the header. */
NBFFI_STALL_EXTERN int nbffi_stall_report(nbffi_stall_report_t *out);

/*
 * Loop thread, after nbffi_stall_beat() returned 1.  Backtrace i (0 <= i
 * < nstacks), in no particular order.  -EINVAL when i is out of range.
 */
NBFFI_STALL_EXTERN int nbffi_stall_stack(uint32_t i,
    nbffi_stall_stack_t *out);

/* Loop thread.  Frees the finished stall; the next one may be recorded. */
NBFFI_STALL_EXTERN void nbffi_stall_release(void);

/* Any thread.  Counters since the last start. */
NBFFI_STALL_EXTERN void nbffi_stall_stats(nbffi_stall_stats_t *out);

/*
 * Loop thread, when its Lua VM is being closed (lua_close has stopped the
 * profiler already, so no Lua call is made): joins the watchdog.
 */
NBFFI_STALL_EXTERN void nbffi_stall_shutdown(void);

#define NBFFI_STALL_ENOTRUNNING  (-3)

#ifdef __cplusplus
}
#endif

#endif /* NBFFI_STALL_H */
