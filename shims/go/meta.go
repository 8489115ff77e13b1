package nbffi

import (
	"context"
	"strings"
)

// Meta returns the metadata the caller posted with the call that ctx (a
// handler's) belongs to -- from Lua, opts.meta of rt:call or rt:stream:
// a request id, a traceparent, a tenant -- or nil when it has none.  The
// map is the call's own: do not modify it.  Lines logged with Logf while
// the call runs carry it to the host's log.
func Meta(ctx context.Context) map[string]string {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil || c.meta == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.metaMap == nil {
		c.metaMap = parseMeta(c.meta)
	}
	return c.metaMap
}

// MetaValue returns the value of key in the call's metadata, see Meta.
func MetaValue(ctx context.Context, key string) (string, bool) {
	v, ok := Meta(ctx)[key]
	return v, ok
}

// parseMeta decodes "key NUL value NUL ..." (checked by libnbffi).
func parseMeta(raw string) map[string]string {
	m := make(map[string]string)
	for raw != "" {
		k, rest, ok := strings.Cut(raw, "\x00")
		if !ok {
			break
		}
		v, rest, _ := strings.Cut(rest, "\x00")
		m[k] = v
		raw = rest
	}
	return m
}
