package io.nbffi;

import java.io.IOException;
import java.net.MalformedURLException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicReferenceArray;
import java.util.logging.Level;
import java.util.logging.Logger;

/*
 * One nbffi runtime in the JVM: a handler, its class loader, its method
 * table, and the calls in flight.  The C loader makes it with start(),
 * runs poll() on each of its poller threads and, once the host closed the
 * queue, calls close() with the host's deadline.
 *
 * executor=platform: the pollers run the calls themselves, so the nbffi
 * queue is the pool's only queue.  Handing calls to a second pool would add
 * a cross-thread wake-up (tens of microseconds on small VMs) per call.
 * executor=virtual: pollers start one virtual thread per call.
 */
final class Instance {

    private static final Logger LOG = Logger.getLogger("io.nbffi");

    /* How long before the end of its wait close interrupts the handlers
       still running (at most a quarter of the time close has). */
    private static final long HURRY_NANOS = TimeUnit.MILLISECONDS.toNanos(200);
    /* How long before the host's deadline close stops waiting, so that
       closing the handler and the loader joining the pollers fit in (at
       most a tenth of the time close has). */
    private static final long MARGIN_NANOS = TimeUnit.MILLISECONDS.toNanos(50);

    private final long queue;
    private final long table;
    private final String name;
    private final Handler handler;
    private final Methods methods;
    private final Methods.Entry[] entries;
    private final URLClassLoader loader;        /* null: no classpath */
    private final ExecutorService executor;     /* null: pollers run calls */
    private final int batch;
    private final long closeTimeoutNanos;
    private final Set<NativeRequest> inflight = ConcurrentHashMap.newKeySet();
    private final CountDownLatch pollersDone;
    private final AtomicIntegerArray pollerLeft;
    private final AtomicReferenceArray<Thread> pollers;
    private final Gate gate = new Gate();
    private final Object drained = new Object();
    private volatile boolean closing;
    private volatile boolean hurrying;
    private final Object logLock = new Object();
    private boolean logOpen = true;             /* guarded by logLock */
    private final Gate emitGate;

    /* The call whose method runs on this thread, for its log lines. */
    private static final ThreadLocal<NativeRequest> CURRENT =
        new ThreadLocal<>();

    private Instance(long queue, long table, String name, Handler handler,
        Methods methods, URLClassLoader loader, ExecutorService executor,
        int threads, int batch, long closeTimeoutMs, Gate emitGate) {
        this.emitGate = emitGate;
        this.queue = queue;
        this.table = table;
        this.name = name;
        this.handler = handler;
        this.methods = methods;
        this.entries = methods.entries().toArray(new Methods.Entry[0]);
        this.loader = loader;
        this.executor = executor;
        this.batch = batch;
        this.closeTimeoutNanos = TimeUnit.MILLISECONDS.toNanos(closeTimeoutMs);
        this.pollersDone = new CountDownLatch(threads);
        this.pollerLeft = new AtomicIntegerArray(threads);
        this.pollers = new AtomicReferenceArray<>(threads);
    }

    static Instance start(long queue, String className, String[] classpath,
        String[] args, boolean virtual, int threads, int batch,
        long closeTimeoutMs, String logLevel) throws StartException {
        LogBridge.install(logLevel);
        URLClassLoader loader = classpath.length == 0
            ? null : loader(classpath);
        Handler handler = null;
        ExecutorService executor = null;
        Gate emitGate = new Gate();
        Thread self = Thread.currentThread();
        ClassLoader context = self.getContextClassLoader();
        try {
            /* Libraries that look classes up through the context class
               loader (ServiceLoader, JDBC drivers) see the handler's. */
            if (loader != null) {
                self.setContextClassLoader(loader);
            }
            handler = instantiate(className, loader, classpath);
            Methods methods;
            try {
                methods = Methods.of(handler, config(args),
                    new NativeEvents(queue, emitGate));
            } catch (Exception | LinkageError e) {
                throw new StartException(className + ".register failed: "
                    + Failure.describe(e));
            }
            if (methods.entries().isEmpty()) {
                throw new StartException(className
                    + ".register registered no methods");
            }
            executor = virtual ? virtualExecutor() : null;
            long table = Native.table(utf8(methods.names()));
            Instance i = new Instance(queue, table, className, handler,
                methods, loader, executor, threads, batch, closeTimeoutMs,
                emitGate);
            LogBridge.opened(i);
            LOG.info(() -> "started " + className + " (methods: "
                + String.join(", ", methods.names()) + "; executor "
                + (virtual ? "virtual" : "platform") + ", " + threads
                + " poller thread(s); Java " + Runtime.version() + ")");
            return i;
        } catch (StartException | RuntimeException | Error e) {
            if (executor != null) {
                executor.shutdown();
            }
            closeQuietly(handler, loader);
            emitGate.shut();
            throw e;
        } finally {
            self.setContextClassLoader(context);
        }
    }

    /* Pops and dispatches until the queue ends.  On poller thread index. */
    void poll(int index) {
        pollers.set(index, Thread.currentThread());
        if (loader != null) {
            /* Virtual threads started from here inherit it. */
            Thread.currentThread().setContextClassLoader(loader);
        }
        long[] tasks = new long[batch];
        int[] info = new int[2 * batch];
        NativeRequest[] popped = new NativeRequest[batch];
        try {
            for (;;) {
                int n;
                if (!gate.enter()) {
                    return;
                }
                try {
                    n = Native.pop(queue, table, tasks, info, batch, -1);
                    for (int k = 0; k < n; k++) {
                        int m = info[2 * k];
                        popped[k] = new NativeRequest(this, tasks[k],
                            m < 0 ? null : entries[m], info[2 * k + 1]);
                        inflight.add(popped[k]);
                    }
                } finally {
                    gate.leave();
                }
                if (n == Native.CLOSED) {
                    return;
                }
                for (int k = 0; k < n; k++) {
                    dispatch(popped[k]);
                    popped[k] = null;
                }
            }
        } catch (Throwable t) {
            LOG.log(Level.SEVERE, "poller " + index + " of " + name
                + " stopped", t);
        } finally {
            pollerLeft.set(index, 1);
            pollersDone.countDown();
        }
    }

    /*
     * Lets the calls in flight finish until deadline (nbffi_now_ns clock,
     * 0: none) or close_timeout, whichever comes first; interrupts the
     * handlers still running shortly before that.  Then answers with
     * CLOSED the calls left whose payload view no handler holds, and
     * leaves the others unanswered: nbffi completes them as closed and
     * keeps their memory, which a handler may still read.  Closes the
     * handler and stops logging through this runtime.  Returns, per
     * poller, whether it is still inside a handler (the loader must not
     * wait for it).  No poller pops afterwards.  abort: the pollers never
     * ran, there is nothing to wait for.
     */
    boolean[] close(long deadline, boolean abort)
        throws InterruptedException {
        long budget = closeTimeoutNanos;
        if (deadline != 0) {
            long left = Math.max(0, deadline - Native.now());
            budget = Math.min(budget, left - Math.min(MARGIN_NANOS, left / 10));
        }
        long end = System.nanoTime() + budget;
        boolean clean = abort
            || drained(end - Math.min(HURRY_NANOS, budget / 4));
        if (!clean) {
            hurry();
            clean = drained(end);
        }
        if (!clean) {
            gate.shut();
            abandon(budget);
        }
        if (executor != null) {
            executor.shutdown();
        }
        closeQuietly(handler, loader);
        emitGate.shut();
        Native.freeTable(table);
        LogBridge.closed(this);
        synchronized (logLock) {
            logOpen = false;
        }
        boolean[] stuck = new boolean[pollerLeft.length()];
        for (int k = 0; k < stuck.length; k++) {
            stuck[k] = pollerLeft.get(k) == 0;
        }
        return stuck;
    }

    /* True once close is about to give up: see Request.cancelled(). */
    boolean hurrying() {
        return hurrying;
    }

    /* Writes a line to the host log; false once this runtime is closed. */
    boolean log(int level, String text) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        synchronized (logLock) {
            if (logOpen) {
                Native.log(queue, level, b);
            }
            return logOpen;
        }
    }

    /* Called once per request, after its answer. */
    void answered(NativeRequest r) {
        inflight.remove(r);
        if (closing && inflight.isEmpty()) {
            synchronized (drained) {
                drained.notifyAll();
            }
        }
    }

    private void dispatch(NativeRequest r) {
        if (executor == null) {
            run(r);
            return;
        }
        try {
            executor.execute(() -> run(r));
        } catch (RejectedExecutionException e) {
            r.fail(new ErrorReply(ErrorReply.CLOSED,
                "runtime closed before the call started"));
        }
    }

    private void run(NativeRequest r) {
        if (r.entry == null) {
            r.fail(methods.noMethod(r.method()));
            return;
        }
        CURRENT.set(r);
        try {
            r.entry.invoke(r, r);
        } finally {
            CURRENT.remove();
        }
    }

    /* The call whose method runs on this thread, or null. */
    static NativeRequest current() {
        return CURRENT.get();
    }

    /* True once the pollers left and no call is in flight, false at end
       (System.nanoTime clock). */
    private boolean drained(long end) throws InterruptedException {
        return pollersDone.await(end - System.nanoTime(),
            TimeUnit.NANOSECONDS) && awaitInflight(end);
    }

    /* Asks the handlers still running to give up: interrupts the pollers
       inside one and the virtual threads; cancelled() turns true. */
    private void hurry() {
        hurrying = true;
        for (int k = 0; k < pollers.length(); k++) {
            Thread t = pollers.get(k);
            if (t != null && pollerLeft.get(k) == 0) {
                t.interrupt();
            }
        }
        if (executor != null) {
            executor.shutdownNow();
        }
    }

    /* Answers what close can; logs what it did. */
    private void abandon(long budget) {
        String msg = "runtime closed before the handler answered (waited "
            + TimeUnit.NANOSECONDS.toMillis(budget) + " ms)";
        byte[] text = msg.getBytes(StandardCharsets.UTF_8);
        int answered = 0;
        int left = 0;
        for (NativeRequest r : inflight) {
            switch (r.answerUnlessViewed(ErrorReply.CLOSED, text)) {
                case NativeRequest.ANSWERED_NOW:
                    answered++;
                    break;
                case NativeRequest.VIEWED:
                    left++;
                    break;
                default:
                    break;
            }
        }
        int n = answered;
        int v = left;
        LOG.warning(() -> name + ": " + msg + "; " + n + " call(s) answered"
            + " with an error" + (v == 0 ? "" : "; " + v + " left to nbffi,"
            + " their handlers still holding a view of the payload"));
    }

    private boolean awaitInflight(long end) throws InterruptedException {
        synchronized (drained) {
            closing = true;
            while (!inflight.isEmpty()) {
                long left = end - System.nanoTime();
                if (left <= 0) {
                    return false;
                }
                TimeUnit.NANOSECONDS.timedWait(drained, left);
            }
        }
        return true;
    }

    private static URLClassLoader loader(String[] classpath)
        throws StartException {
        URL[] urls = new URL[classpath.length];
        for (int k = 0; k < classpath.length; k++) {
            Path p = Path.of(classpath[k]);
            if (!Files.exists(p)) {
                throw new StartException("classpath entry '" + classpath[k]
                    + "' does not exist");
            }
            try {
                urls[k] = p.toUri().toURL();
            } catch (MalformedURLException e) {
                throw new StartException("bad classpath entry '"
                    + classpath[k] + "': " + e.getMessage());
            }
        }
        /* Parent first: io.nbffi comes from the JVM's class path, where
           the loader put the nbffi jar, so every runtime shares one
           Handler type even when its classpath lists the jar too.
           Unnamed, so that stack traces read as on the class path. */
        return new URLClassLoader(urls, Instance.class.getClassLoader());
    }

    private static Handler instantiate(String className, ClassLoader loader,
        String[] classpath) throws StartException {
        Class<?> c;
        try {
            c = Class.forName(className, true, loader == null
                ? ClassLoader.getSystemClassLoader() : loader);
        } catch (ClassNotFoundException e) {
            throw new StartException("handler class '" + className
                + "' not found (classpath: " + String.join(":", classpath)
                + ")");
        } catch (LinkageError e) {
            throw new StartException("handler class '" + className
                + "' failed to load: " + Failure.describe(e));
        }
        if (!Handler.class.isAssignableFrom(c)) {
            throw new StartException("class '" + className
                + "' does not implement " + Handler.class.getName());
        }
        try {
            return (Handler) c.getConstructor().newInstance();
        } catch (NoSuchMethodException e) {
            throw new StartException("handler class '" + className
                + "' needs a public no-argument constructor");
        } catch (ReflectiveOperationException | RuntimeException
            | LinkageError e) {
            Throwable t = e.getCause() != null ? e.getCause() : e;
            throw new StartException("cannot construct '" + className
                + "': " + Failure.describe(t));
        }
    }

    private static ExecutorService virtualExecutor() throws StartException {
        try {
            /* Reflection: the jar targets Java 17, which has none. */
            return (ExecutorService) Executors.class
                .getMethod("newVirtualThreadPerTaskExecutor").invoke(null);
        } catch (NoSuchMethodException e) {
            throw new StartException("executor=virtual needs Java 21 or"
                + " later; this JVM is " + Runtime.version());
        } catch (ReflectiveOperationException e) {
            throw new StartException("cannot make a virtual-thread"
                + " executor: " + Failure.describe(e));
        }
    }

    private static Map<String, String> config(String[] args) {
        Map<String, String> m = new LinkedHashMap<>();
        for (String a : args) {
            int eq = a.indexOf('=');
            m.put(a.substring(0, eq), a.substring(eq + 1));
        }
        return m;
    }

    private static byte[][] utf8(List<String> names) {
        byte[][] b = new byte[names.size()][];
        for (int k = 0; k < b.length; k++) {
            b[k] = names.get(k).getBytes(StandardCharsets.UTF_8);
        }
        return b;
    }

    private static void closeQuietly(Handler handler, URLClassLoader loader) {
        if (handler != null) {
            try {
                handler.close();
            } catch (Throwable t) {
                LOG.log(Level.WARNING, handler.getClass().getName()
                    + ".close failed", t);
            }
        }
        if (loader != null) {
            try {
                loader.close();
            } catch (IOException e) {
                LOG.log(Level.WARNING, "closing the class loader failed", e);
            }
        }
    }
}
