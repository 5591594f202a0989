package broker

import (
	"bytes"
	"slices"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// appendResponse appends the JSON array answering a request: replies in
// message order, then deliveries, then the /meta/connect reply (if any).
// Delivery payloads are shared bytes, copied into the response buffer only.
func appendResponse(dst []byte, replies []*protocol.Reply, pubs []*engine.Publication, connect *protocol.Reply) []byte {
	// One allocation: replies are about 200 bytes, deliveries known.
	n := 2 + 200*len(replies)
	for _, p := range pubs {
		n += len(p.Payload) + 1
	}
	if connect != nil {
		n += 200
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, '[')
	first := true
	sep := func() {
		if !first {
			dst = append(dst, ',')
		}
		first = false
	}
	for _, r := range replies {
		sep()
		dst = protocol.AppendReply(dst, r)
	}
	for _, p := range pubs {
		sep()
		dst = append(dst, p.Payload...)
	}
	if connect != nil {
		sep()
		dst = protocol.AppendReply(dst, connect)
	}
	return append(dst, ']')
}

var (
	lineSep = []byte("\u2028")
	paraSep = []byte("\u2029")
)

// appendJSONP wraps a JSON response for a JSONP callback. U+2028/U+2029 are
// legal in JSON strings but end a line in older JavaScript, so they are
// escaped; the leading comment defeats content sniffing attacks.
func appendJSONP(dst []byte, callback string, body []byte) []byte {
	dst = append(dst, "/**/"...)
	dst = append(dst, callback...)
	dst = append(dst, '(')
	if bytes.Contains(body, lineSep) || bytes.Contains(body, paraSep) {
		body = bytes.ReplaceAll(body, lineSep, []byte(`\u2028`))
		body = bytes.ReplaceAll(body, paraSep, []byte(`\u2029`))
	}
	dst = append(dst, body...)
	return append(dst, ");"...)
}

// validCallback accepts a JavaScript identifier or a dotted path of them,
// at most 128 bytes, ASCII only.
func validCallback(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	start := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if start {
				return false
			}
			start = true
			continue
		case c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case c >= '0' && c <= '9':
			if start {
				return false
			}
		default:
			return false
		}
		start = false
	}
	return !start
}
