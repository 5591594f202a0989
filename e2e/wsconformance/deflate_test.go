package wsconformance

// Sections 12 and 13: permessage-deflate (RFC 7692). Section 12 sends
// compressed Bayeux messages of growing sizes, fragmented and not, and
// checks each reply inflates on its own; section 13 varies the offer and
// checks the server's answer. The node always answers an accepted offer
// with server_no_context_takeover and client_no_context_takeover.

import (
	"bytes"
	"fmt"
	"strings"
)

// deflateAnswer is the node's answer to every offer it accepts.
const deflateAnswer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// The offers real clients make.
const (
	offerBrowser = "permessage-deflate; client_max_window_bits" // Chromium, Node's ws, Faye's permessage-deflate
	offerNoCtx   = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
)

// bayeuxJSON is a compressible id of about n bytes (JSON-like text).
func bayeuxJSON(n int) string {
	unit := `{channel:/chat/room/42,data:{text:hello there,seq:1234}}`
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

func deflateCases() []wsCase {
	var cs []wsCase
	sizes := []int{16, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 200 << 10}
	for i, n := range sizes {
		id := bayeuxJSON(n)
		cs = append(cs, wsCase{id: fmt.Sprintf("12.1.%d", i+1), desc: fmt.Sprintf("compressed message with a %d-byte id", n), offer: offerBrowser, run: func(c *client) {
			c.send(compressed(bayeux(id)))
			f := c.readEcho(id)
			if n >= 1<<10 && !f.compressed {
				c.t.Fatalf("reply of %d bytes not compressed", len(f.payload))
			}
			c.closeNormally()
		}})
	}
	for i, n := range []int{1, 7, 64, 1 << 10} {
		id := bayeuxJSON(8 << 10)
		cs = append(cs, wsCase{id: fmt.Sprintf("12.2.%d", i+1), desc: fmt.Sprintf("compressed message in fragments of %d bytes, a ping between", n), offer: offerBrowser, run: func(c *client) {
			z := deflateMessage(bayeux(id))
			frames := fragments(n)(z)
			frames[0].rsv = 0x40
			mid := len(frames) / 2
			frames = append(frames[:mid], append([]frame{ping("between")}, frames[mid:]...)...)
			c.send(frames...)
			c.expectPong("between")
			c.readEcho(id)
			c.closeNormally()
		}})
	}
	cs = append(cs,
		wsCase{id: "12.3.1", desc: "100 compressed messages, each inflated alone", offer: offerBrowser, run: func(c *client) {
			for i := range 100 {
				id := fmt.Sprintf("%d:%s", i, bayeuxJSON(100+i*37))
				c.send(compressed(bayeux(id)))
				c.readEcho(id)
			}
			c.closeNormally()
		}},
		wsCase{id: "12.3.2", desc: "compressed and plain messages mixed", offer: offerBrowser, run: func(c *client) {
			for i := range 20 {
				id := fmt.Sprintf("%d:%s", i, bayeuxJSON(2000))
				if i%2 == 0 {
					c.send(compressed(bayeux(id)))
				} else {
					c.send(text(bayeux(id)))
				}
				c.readEcho(id)
			}
			c.closeNormally()
		}},
		wsCase{id: "12.4.1", desc: "compressed message inflating to the limit", offer: offerBrowser, run: func(c *client) {
			req, ids := bigRequest(limit)
			c.send(compressed(req))
			c.expectEchoes(ids)
			c.closeNormally()
		}},
		wsCase{id: "12.4.2", desc: "compressed message inflating one byte over the limit", offer: offerBrowser, run: func(c *client) {
			req, _ := bigRequest(limit + 1)
			c.loose = true
			c.send(compressed(req))
			c.expectClose(1009)
		}},
		wsCase{id: "12.4.3", desc: "deflate bomb (16 MiB of spaces in about 16 KB)", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(frame{fin: true, rsv: 0x40, op: opText, payload: deflateMessage(bytes.Repeat([]byte{' '}, 16<<20))})
			c.expectClose(1009)
		}},
		wsCase{id: "12.5.1", desc: "corrupt compressed data", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(frame{fin: true, rsv: 0x40, op: opText, payload: []byte{0xff, 0xfe, 0xfd, 0xfc}})
			c.expectClose(1007)
		}},
		wsCase{id: "12.5.2", desc: "compressed text inflating to invalid UTF-8", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(compressed(bayeux("κόσμε\xed\xa0\x80edited")))
			c.expectClose(1007)
		}},
		wsCase{id: "12.5.3", desc: "RSV1 on a continuation frame", offer: offerBrowser, run: func(c *client) {
			z := deflateMessage(bayeux("x"))
			c.loose = true
			c.send(frame{rsv: 0x40, op: opText, payload: z[:2]}, frame{fin: true, rsv: 0x40, op: opCont, payload: z[2:]})
			c.expectClose(1002)
		}},
		wsCase{id: "12.5.4", desc: "RSV1 on a ping", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(frame{fin: true, rsv: 0x40, op: opPing, payload: []byte("p")})
			c.expectClose(1002)
		}},
		wsCase{id: "12.5.5", desc: "RSV2 with deflate negotiated", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(frame{fin: true, rsv: 0x60, op: opText, payload: deflateMessage(bayeux("x"))})
			c.expectClose(1002)
		}},
		wsCase{id: "12.5.6", desc: "compressed empty message (not JSON)", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(compressed(nil))
			c.expectClose(1007)
		}},
		wsCase{id: "12.5.7", desc: "compressed binary message", offer: offerBrowser, run: func(c *client) {
			c.loose = true
			c.send(frame{fin: true, rsv: 0x40, op: opBinary, payload: deflateMessage(bayeux("x"))})
			c.expectClose(1003)
		}},
	)
	return append(cs, negotiationCases()...)
}

// readEcho expects the reply to id and returns its frame.
func (c *client) readEcho(id string) serverFrame {
	c.t.Helper()
	f := c.read()
	if f.op != opText || !bytes.Contains(f.payload, []byte(`"id":"`+id+`"`)) {
		c.t.Fatalf("want the reply to %.40q, got opcode %d %.120q", id, f.op, f.payload)
	}
	return f
}

// negotiationCases: section 13, the offers and the answers.
func negotiationCases() []wsCase {
	offers := []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate", true},
		{offerBrowser, true},
		{offerNoCtx, true},
		{"permessage-deflate; client_max_window_bits=8", true},
		{"permessage-deflate; client_max_window_bits=15; server_max_window_bits=15", true},
		{"permessage-deflate; server_max_window_bits=9", false},
		{"permessage-deflate; server_max_window_bits=9, permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate; unknown_parameter", false},
		{"permessage-deflate; server_no_context_takeover=yes", false},
		{"x-webkit-deflate-frame", false},
	}
	var cs []wsCase
	for i, o := range offers {
		id := bayeuxJSON(3000)
		cs = append(cs, wsCase{id: fmt.Sprintf("13.%d", i+1), desc: "offer " + o.offer, offer: o.offer, run: func(c *client) {
			if o.accept != (c.ext == deflateAnswer) || (!o.accept && c.ext != "") {
				c.t.Fatalf("offer %q answered %q (accept: %v)", o.offer, c.ext, o.accept)
			}
			if !o.accept {
				c.loose = true
				c.send(compressed(bayeux(id)))
				c.expectClose(1002) // RSV1 without the extension
				return
			}
			for i := range 5 {
				c.send(compressed(bayeux(fmt.Sprint(i, id))))
				if f := c.readEcho(fmt.Sprint(i, id)); !f.compressed {
					c.t.Fatal("reply not compressed")
				}
			}
			c.closeNormally()
		}})
	}
	return cs
}
