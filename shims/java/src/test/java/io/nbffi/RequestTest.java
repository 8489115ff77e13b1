package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ReadOnlyBufferException;
import org.junit.jupiter.api.Test;

class RequestTest {

    @Test
    void heapRequestCopiesAndIsReadOnly() {
        byte[] src = {1, 2, 3};
        Request r = Request.of("m", src);
        src[0] = 9;
        assertArrayEquals(new byte[] {1, 2, 3}, r.bytes());
        r.bytes()[1] = 9;
        assertArrayEquals(new byte[] {1, 2, 3}, r.bytes());

        ByteBuffer p = r.payload();
        assertTrue(p.isReadOnly());
        assertEquals(3, p.remaining());
        assertThrows(ReadOnlyBufferException.class, () -> p.put(0, (byte) 7));
        p.get();
        assertEquals(3, r.payload().remaining(), "views are independent");

        assertEquals("m", r.method());
        assertEquals(3, r.size());
        assertEquals(Long.MAX_VALUE, r.remainingNanos());
        assertFalse(r.cancelled());
    }
}
