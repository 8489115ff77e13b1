package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.logging.Level;
import java.util.logging.LogRecord;
import org.junit.jupiter.api.Test;

class LogBridgeTest {

    @Test
    void levelsMapToSyslogOnes() {
        assertEquals(LogBridge.ERR, LogBridge.level(Level.SEVERE));
        assertEquals(LogBridge.WARN, LogBridge.level(Level.WARNING));
        assertEquals(LogBridge.INFO, LogBridge.level(Level.INFO));
        assertEquals(LogBridge.INFO, LogBridge.level(Level.CONFIG));
        assertEquals(LogBridge.DEBUG, LogBridge.level(Level.FINE));
        assertEquals(LogBridge.DEBUG, LogBridge.level(Level.FINEST));
        /* System.Logger.Level.ERROR maps to SEVERE, and so on */
        assertEquals(LogBridge.ERR, LogBridge.level(Level.parse("1000")));
    }

    @Test
    void formatHasLoggerMessageParametersAndThrowable() throws Exception {
        java.lang.reflect.Constructor<LogBridge> c =
            LogBridge.class.getDeclaredConstructor();
        c.setAccessible(true);
        LogBridge b = c.newInstance();

        LogRecord r = new LogRecord(Level.INFO, "n={0}");
        r.setParameters(new Object[] {7});
        r.setLoggerName("app");
        assertEquals("app: n=7", b.format(r));

        r = new LogRecord(Level.WARNING, "failed");
        r.setThrown(new IllegalStateException("why"));
        String s = b.format(r);
        assertTrue(s.startsWith("failed\njava.lang.IllegalStateException:"
            + " why\n\tat "), s);
    }
}
