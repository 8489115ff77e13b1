package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.nbffi.it.TestHandler;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/* Streams, events and metadata through TestRuntime (no native code). */
class StreamTest {

    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void streamMethodSendsChunksThenEnds() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.stream("stream_n", b("3"), Map.of());
            assertTrue(r.ok(), r.toString());
            assertEquals(List.of("chunk 1", "chunk 2", "chunk 3"), r.texts());
        }
    }

    @Test
    void streamErrorKeepsTheChunksSentBefore() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.stream("stream_error", b(""), Map.of());
            assertEquals(9, r.status());
            assertEquals("broke after two", r.text());
            assertEquals(List.of("one", "two"), r.texts());
        }
    }

    @Test
    void publisherHonoursDemand() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.stream("publish_lines",
                b("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\nr"),
                Map.of());
            assertTrue(r.ok(), r.toString());
            assertEquals(18, r.texts().size());
            assertEquals("r", r.texts().get(17));
        }
    }

    @Test
    void streamMethodRefusesAPlainCall() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.call("stream_n", "3");
            assertEquals(ErrorReply.NOT_A_STREAM, r.status());
            assertTrue(r.text().contains("rt:stream"), r.text());
        }
    }

    @Test
    void metadataReachesTheMethod() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.stream("meta", b(""),
                Map.of("request_id", "r-1"));
            assertEquals("request_id=r-1;", r.text());
            assertEquals("", rt.call("meta", "").text());
        }
    }

    @Test
    void eventsAreRecorded() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            assertEquals("true", rt.call("emit", "reloaded v2").text());
            assertEquals("started", rt.call("emit_later", "x").text());
            List<TestRuntime.Event> ev = rt.events();
            assertEquals(2, ev.size());
            assertEquals("reloaded", ev.get(0).name());
            assertEquals("v2", ev.get(0).text());
            assertEquals("later", ev.get(1).name());
            assertThrows(IllegalArgumentException.class,
                () -> new Methods(Map.of()).events().emit("", "x"));
        }
    }

    @Test
    void badEventNamesAreRefused() throws Exception {
        try (TestRuntime rt = TestRuntime.start(TestHandler.class)) {
            TestRuntime.Reply r = rt.call("emit", "");
            assertEquals(ErrorReply.FAILED, r.status());
            assertTrue(r.text().contains("bad event name"), r.text());
        }
    }
}
