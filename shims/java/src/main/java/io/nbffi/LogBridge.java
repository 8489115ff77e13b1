package io.nbffi;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Formatter;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;

/*
 * Sends java.util.logging records (and System.Logger ones, whose default
 * backend is java.util.logging) to the host log through an open runtime.
 * The JVM is shared by every runtime in the process, and so is the host
 * log, so the newest open runtime carries them all.  Without one, records
 * go to stderr (which nginx points at its error log).  A record written
 * on the thread of a method while it runs goes through its call, with the
 * call's metadata attached (request id...).
 */
final class LogBridge extends java.util.logging.Handler {

    static final int ERR = 3;
    static final int WARN = 4;
    static final int INFO = 6;
    static final int DEBUG = 7;

    private static final LogBridge INSTANCE = new LogBridge();
    private static final List<Instance> OPEN = new CopyOnWriteArrayList<>();
    private static boolean installed;

    private final Formatter formatter = new SimpleFormatter();

    private LogBridge() {
    }

    /* Makes this the root logger's only handler, once; sets its level. */
    static synchronized void install(String level) throws StartException {
        Logger root = Logger.getLogger("");
        if (level != null) {
            try {
                root.setLevel(Level.parse(level));
            } catch (IllegalArgumentException e) {
                throw new StartException("bad log_level '" + level
                    + "': use SEVERE, WARNING, INFO, CONFIG, FINE, FINER,"
                    + " FINEST, ALL or OFF");
            }
        }
        if (installed) {
            return;
        }
        for (java.util.logging.Handler h : root.getHandlers()) {
            root.removeHandler(h);
        }
        root.addHandler(INSTANCE);
        installed = true;
    }

    static void opened(Instance i) {
        OPEN.add(i);
    }

    static void closed(Instance i) {
        OPEN.remove(i);
    }

    /* nbffi_log_level_t of a java.util.logging level. */
    static int level(Level l) {
        int v = l.intValue();
        if (v >= Level.SEVERE.intValue()) {
            return ERR;
        }
        if (v >= Level.WARNING.intValue()) {
            return WARN;
        }
        if (v >= Level.CONFIG.intValue()) {
            return INFO;
        }
        return DEBUG;
    }

    /* "logger: message", then the stack trace of the record's throwable. */
    String format(LogRecord r) {
        String msg = formatter.formatMessage(r);
        String name = r.getLoggerName();
        String s = name == null || name.isEmpty() ? msg : name + ": " + msg;
        Throwable t = r.getThrown();
        return t == null ? s : s + "\n" + Failure.describe(t);
    }

    @Override
    public void publish(LogRecord r) {
        if (r == null || !isLoggable(r)) {
            return;
        }
        String text = format(r);
        int level = level(r.getLevel());
        NativeRequest call = Instance.current();
        if (call != null
            && call.log(level, text.getBytes(StandardCharsets.UTF_8))) {
            return;
        }
        for (int i = OPEN.size() - 1; i >= 0; i--) {
            Instance target;
            try {
                target = OPEN.get(i);
            } catch (IndexOutOfBoundsException gone) {
                continue;
            }
            if (target.log(level, text)) {
                return;
            }
        }
        System.err.println(text);
    }

    @Override
    public void flush() {
    }

    @Override
    public void close() {
    }
}
