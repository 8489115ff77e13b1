package io.nbffi;

import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/* Checks of the names that cross into C. */
final class Names {

    private Names() {
    }

    /* name's UTF-8 bytes: 1..max of them, no NUL; else
       IllegalArgumentException naming what. */
    static byte[] check(String what, String name, int max) {
        byte[] b = name.getBytes(StandardCharsets.UTF_8);
        if (b.length == 0 || b.length > max || name.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("bad " + what + " name '"
                + name + "': 1.." + max + " bytes of UTF-8, no NUL");
        }
        return b;
    }

    /* Metadata encoded as nbffi does (key NUL value NUL ...), in order. */
    static Map<String, String> meta(byte[] raw) {
        Map<String, String> m = new LinkedHashMap<>();
        if (raw == null) {
            return Collections.emptyMap();
        }
        int i = 0;
        while (i < raw.length) {
            int k = i;
            while (k < raw.length && raw[k] != 0) {
                k++;
            }
            int v = k + 1;
            int e = v;
            while (e < raw.length && raw[e] != 0) {
                e++;
            }
            if (v > raw.length) {
                break;
            }
            m.put(new String(raw, i, k - i, StandardCharsets.UTF_8),
                new String(raw, v, Math.min(e, raw.length) - v,
                    StandardCharsets.UTF_8));
            i = e + 1;
        }
        return Collections.unmodifiableMap(m);
    }
}
