package wsconformance

// The cases of sections 1 to 7 and 9, numbered after the Autobahn
// TestSuite's sections (the numbers within a section are this suite's).
// Each case runs on a connection of its own and ends either with the
// close handshake (closeNormally) or with the close the server must send
// (expectClose). See doc.go for how echo cases map to Bayeux messages.

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// wsCase is one case.
type wsCase struct {
	id    string
	desc  string
	offer string // Sec-WebSocket-Extensions offered (empty: none)
	run   func(c *client)
}

// echoCase sends id as one Bayeux message in the frames split gives and
// expects its reply.
func echoCase(num, desc, id string, split func(m []byte) []frame) wsCase {
	return wsCase{id: num, desc: desc, run: func(c *client) {
		c.send(split(bayeux(id))...)
		c.expectEcho(id)
		c.closeNormally()
	}}
}

func whole(m []byte) []frame { return []frame{text(m)} }

// fragments splits m into frames of n bytes.
func fragments(n int) func(m []byte) []frame {
	return func(m []byte) []frame {
		var out []frame
		for i := 0; i < len(m); i += n {
			out = append(out, cont(m[i:min(i+n, len(m))]))
		}
		out[0].op = opText
		out[len(out)-1].fin = true
		return out
	}
}

// failCase sends frames (after the setup frames, whose replies it expects
// first) and expects close code.
func failCase(num, desc string, code uint16, frames ...frame) wsCase {
	return wsCase{id: num, desc: desc, run: func(c *client) {
		c.loose = true
		c.send(frames...)
		c.expectClose(code)
	}}
}

// echoThenFail sends a valid message, then bad, then a ping: the valid
// message is answered, then the connection is failed with code and the
// ping is never answered.
func echoThenFail(num, desc string, code uint16, bad frame) wsCase {
	return wsCase{id: num, desc: desc, run: func(c *client) {
		c.loose = true
		c.send(text(bayeux("before")), bad, ping("after"))
		c.expectEcho("before")
		c.expectClose(code)
	}}
}

// payloadOfLen is an id making bayeux(id) exactly n bytes long.
func payloadOfLen(n int) string {
	return strings.Repeat("x", n-len(bayeux("")))
}

func framingCases() []wsCase {
	var cs []wsCase
	for i, n := range []int{125, 126, 127, 128, 65535, 65536} {
		id := payloadOfLen(n)
		cs = append(cs, echoCase(fmt.Sprintf("1.1.%d", i+1), fmt.Sprintf("text message of %d bytes", n), id, whole))
	}
	cs = append(cs,
		wsCase{id: "1.1.7", desc: "65536-byte text message written in 997-byte chops", run: func(c *client) {
			id := payloadOfLen(65536)
			c.chop = 997
			c.send(text(bayeux(id)))
			c.expectEcho(id)
			c.closeNormally()
		}},
		failCase("1.1.8", "empty text message (not JSON)", 1007, text(nil)),
		failCase("1.2.1", "binary message", 1003, binaryMsg(bayeux("bin"))),
		failCase("1.2.2", "empty binary message", 1003, binaryMsg(nil)),
		failCase("1.2.3", "65536-byte binary message", 1003, binaryMsg(bayeux(payloadOfLen(65536)))),
		wsCase{id: "1.3.1", desc: "two messages in one TCP write, then each byte in its own", run: func(c *client) {
			c.send(text(bayeux("one")), text(bayeux("two")))
			c.expectEcho("one")
			c.expectEcho("two")
			c.chop = 1
			c.send(text(bayeux("three")))
			c.expectEcho("three")
			c.closeNormally()
		}},
	)
	return cs
}

func pingCases() []wsCase {
	p125 := strings.Repeat("p", 125)
	binaryPayload := string([]byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff})
	pingPong := func(num, desc, p string, chop int) wsCase {
		return wsCase{id: num, desc: desc, run: func(c *client) {
			c.chop = chop
			c.send(ping(p))
			c.expectPong(p)
			c.closeNormally()
		}}
	}
	many := func(num, desc string, chop int) wsCase {
		return wsCase{id: num, desc: desc, run: func(c *client) {
			var pings []string
			var frames []frame
			for i := range 10 {
				pings = append(pings, fmt.Sprintf("payload-%d", i))
				frames = append(frames, ping(pings[i]))
			}
			c.chop = chop
			c.send(frames...)
			c.expectPongs(pings)
			c.closeNormally()
		}}
	}
	return []wsCase{
		pingPong("2.1", "ping without payload", "", 0),
		pingPong("2.2", "ping with a text payload", "Hello, world!", 0),
		pingPong("2.3", "ping with a binary payload", binaryPayload, 0),
		pingPong("2.4", "ping with 125 bytes", p125, 0),
		failCase("2.5", "ping with 126 bytes", 1002, ping(p125+"p")),
		pingPong("2.6", "ping with 125 bytes written byte by byte", p125, 1),
		{id: "2.7", desc: "unsolicited pong without payload", run: func(c *client) {
			c.send(pong(""), text(bayeux("after")))
			c.expectEcho("after")
			c.closeNormally()
		}},
		{id: "2.8", desc: "unsolicited pong with payload", run: func(c *client) {
			c.send(pong("unsolicited"), text(bayeux("after")))
			c.expectEcho("after")
			c.closeNormally()
		}},
		{id: "2.9", desc: "unsolicited pong, then ping", run: func(c *client) {
			c.send(pong("unsolicited"), ping("solicited"))
			c.expectPong("solicited")
			c.closeNormally()
		}},
		many("2.10", "10 pings back to back", 0),
		many("2.11", "10 pings back to back, byte by byte", 1),
	}
}

func reservedBitCases() []wsCase {
	withRSV := func(f frame, rsv byte) frame { f.rsv = rsv; return f }
	return []wsCase{
		failCase("3.1", "RSV1 on a text frame, deflate not negotiated", 1002, withRSV(text(bayeux("x")), 0x40)),
		echoThenFail("3.2", "RSV2 on a text frame after a valid one", 1002, withRSV(text(bayeux("x")), 0x20)),
		{id: "3.3", desc: "RSV3 after a valid frame, byte by byte", run: func(c *client) {
			c.chop, c.loose = 1, true
			c.send(text(bayeux("before")), withRSV(text(bayeux("x")), 0x10), ping("after"))
			c.expectEcho("before")
			c.expectClose(1002)
		}},
		echoThenFail("3.4", "RSV1+RSV2 on a text frame", 1002, withRSV(text(bayeux("x")), 0x60)),
		failCase("3.5", "RSV1+RSV3 on a binary frame", 1002, withRSV(binaryMsg([]byte{1, 2}), 0x50)),
		failCase("3.6", "RSV2+RSV3 on a ping", 1002, withRSV(ping("p"), 0x30)),
		failCase("3.7", "all RSV bits on a close", 1002, withRSV(closeFrame(1000, ""), 0x70)),
	}
}

func opcodeCases() []wsCase {
	var cs []wsCase
	for i, op := range []byte{3, 4, 5, 6, 7} {
		cs = append(cs, echoThenFail(fmt.Sprintf("4.1.%d", i+1), fmt.Sprintf("reserved data opcode %d", op), 1002,
			frame{fin: true, op: op, payload: []byte("reserved")}))
	}
	for i, op := range []byte{11, 12, 13, 14, 15} {
		cs = append(cs, echoThenFail(fmt.Sprintf("4.2.%d", i+1), fmt.Sprintf("reserved control opcode %d", op), 1002,
			frame{fin: true, op: op}))
	}
	return cs
}

func fragmentationCases() []wsCase {
	id := "fragmented-message"
	m := bayeux(id)
	half := len(m) / 2
	withPing := func(num, desc string, chop int, pace time.Duration) wsCase {
		return wsCase{id: num, desc: desc, run: func(c *client) {
			c.chop, c.pace = chop, pace
			c.send(first(m[:half]), ping("between"), last(m[half:]))
			c.expectPong("between")
			c.expectEcho(id)
			c.closeNormally()
		}}
	}
	return []wsCase{
		failCase("5.1", "fragmented ping", 1002, frame{op: opPing, payload: []byte("a")}, frame{fin: true, op: opCont, payload: []byte("b")}),
		failCase("5.2", "fragmented pong", 1002, frame{op: opPong, payload: []byte("a")}, frame{fin: true, op: opCont, payload: []byte("b")}),
		echoCase("5.3", "text in two fragments", id, fragments(half+1)),
		{id: "5.4", desc: "text in two fragments, byte by byte", run: func(c *client) {
			c.chop = 1
			c.send(first(m[:half]), last(m[half:]))
			c.expectEcho(id)
			c.closeNormally()
		}},
		{id: "5.5", desc: "text in two fragments, paced", run: func(c *client) {
			c.chop, c.pace = 3, 2*time.Millisecond
			c.send(first(m[:half]), last(m[half:]))
			c.expectEcho(id)
			c.closeNormally()
		}},
		withPing("5.6", "text in two fragments, ping between", 0, 0),
		withPing("5.7", "text in two fragments, ping between, byte by byte", 1, 0),
		withPing("5.8", "text in two fragments, ping between, paced", 5, 2*time.Millisecond),
		failCase("5.9", "continuation (fin) without a message", 1002, last(m)),
		{id: "5.10", desc: "continuation (fin) without a message, byte by byte", run: func(c *client) {
			c.chop, c.loose = 1, true
			c.send(last(m))
			c.expectClose(1002)
		}},
		failCase("5.11", "continuation (not fin) without a message", 1002, cont(m)),
		failCase("5.12", "two continuations without a message", 1002, cont(m[:half]), last(m[half:])),
		{id: "5.13", desc: "a message, then a continuation", run: func(c *client) {
			c.loose = true
			c.send(text(bayeux("whole")), last(m))
			c.expectEcho("whole")
			c.expectClose(1002)
		}},
		failCase("5.14", "text (not fin), then text (fin)", 1002, first(m[:half]), text(m[half:])),
		{id: "5.15", desc: "whole fragmented message, then a continuation, then text", run: func(c *client) {
			c.loose = true
			c.send(first(m[:half]), last(m[half:]), cont([]byte("x")), text(bayeux("never")))
			c.expectEcho(id)
			c.expectClose(1002)
		}},
		{id: "5.16", desc: "text in three fragments, two pings between", run: func(c *client) {
			third := len(m) / 3
			c.send(first(m[:third]), ping("one"), cont(m[third:2*third]), ping("two"), last(m[2*third:]))
			c.expectPongs([]string{"one", "two"})
			c.expectEcho(id)
			c.closeNormally()
		}},
		echoCase("5.17", "text in fragments of one byte", id, fragments(1)),
		{id: "5.18", desc: "empty fragments around the message", run: func(c *client) {
			c.send(first(nil), cont(m), cont(nil), last(nil))
			c.expectEcho(id)
			c.closeNormally()
		}},
	}
}

// UTF-8 sequences, valid and not (RFC 3629), each put in a Bayeux id.
var (
	validUTF8 = []struct{ name, s string }{
		{"ASCII and Latin-1", "Hello-µ@ßöäüàá-UTF-8!!"},
		{"Greek", "κόσμε"},
		{"U+0080", "\xc2\x80"},
		{"U+07FF", "\xdf\xbf"},
		{"U+0800", "\xe0\xa0\x80"},
		{"U+D7FF", "\xed\x9f\xbf"},
		{"U+E000", "\xee\x80\x80"},
		{"U+FFFD", "\xef\xbf\xbd"},
		{"U+FFFE (a noncharacter, valid UTF-8)", "\xef\xbf\xbe"},
		{"U+FFFF", "\xef\xbf\xbf"},
		{"U+10000", "\xf0\x90\x80\x80"},
		{"U+10FFFF", "\xf4\x8f\xbf\xbf"},
		{"emoji", "😀 and 中文 and ‰"},
	}
	invalidUTF8 = []struct{ name, s string }{
		{"lone continuation byte", "a\x80b"},
		{"lone 0xbf", "\xbf"},
		{"overlong slash (2 bytes)", "\xc0\xaf"},
		{"overlong slash (3 bytes)", "\xe0\x80\xaf"},
		{"overlong slash (4 bytes)", "\xf0\x80\x80\xaf"},
		{"overlong NUL", "\xc0\x80"},
		{"0xc1 lead byte", "\xc1\xbf"},
		{"5-byte sequence", "\xf8\x88\x80\x80\x80"},
		{"6-byte sequence", "\xfc\x84\x80\x80\x80\x80"},
		{"0xfe", "\xfe"},
		{"0xff", "\xff"},
		{"truncated 2-byte sequence", "\xc2x"},
		{"truncated 3-byte sequence", "\xe0\xa0x"},
		{"truncated 4-byte sequence", "\xf0\x90\x80x"},
		{"above U+10FFFF", "\xf4\x90\x80\x80"},
		{"surrogate U+D800", "\xed\xa0\x80"},
		{"surrogate U+DFFF", "\xed\xbf\xbf"},
		{"surrogate pair", "\xed\xa0\x80\xed\xb0\x80"},
		{"valid text then a surrogate", "κόσμε\xed\xa0\x80edited"},
	}
)

func utf8Cases() []wsCase {
	var cs []wsCase
	splits := []struct {
		name  string
		split func(m []byte) []frame
	}{
		{"one frame", whole},
		{"fragments of 1 byte", fragments(1)},
		{"fragments of 2 bytes", fragments(2)},
		{"fragments of 3 bytes", fragments(3)},
	}
	cs = append(cs,
		failCase("6.1.1", "empty text message", 1007, text(nil)),
		failCase("6.1.2", "empty fragments only", 1007, first(nil), cont(nil), last(nil)),
	)
	for i, v := range validUTF8 {
		for j, s := range splits {
			cs = append(cs, echoCase(fmt.Sprintf("6.2.%d.%d", i+1, j+1), v.name+", "+s.name, v.s, s.split))
		}
	}
	for i, v := range invalidUTF8 {
		for j, s := range splits {
			cs = append(cs, failCase(fmt.Sprintf("6.3.%d.%d", i+1, j+1), v.name+", "+s.name, 1007, s.split(bayeux(v.s))...))
		}
	}
	// 6.4: the invalid bytes are in the first fragment; the message ends
	// in a later frame, or never (6.4.5: the server must fail fast).
	bad := bayeux("κόσμε\xed\xa0\x80edited")
	cut := bytes.Index(bad, []byte("edited"))
	cs = append(cs,
		failCase("6.4.1", "invalid bytes in the first fragment", 1007, first(bad[:cut]), last(bad[cut:])),
		wsCase{id: "6.4.2", desc: "invalid bytes in the first fragment, the rest paced", run: func(c *client) {
			c.loose = true
			c.send(first(bad[:cut]))
			c.pace, c.chop = 2*time.Millisecond, 2
			c.send(last(bad[cut:]))
			c.expectClose(1007)
		}},
		failCase("6.4.5", "invalid bytes in the first fragment, the message never ends (fail fast)", 1007, first(bad[:cut])),
		failCase("6.4.3", "a code point split across fragments, its end invalid", 1007,
			first([]byte(`[{"channel":"/meta/connect","id":"`+"\xe2\x82")), last([]byte(`x"}]`))),
		echoCase("6.4.4", "a code point split across fragments", "€€€", func(m []byte) []frame {
			i := bytes.IndexByte(m, 0xe2) + 1 // inside the first €
			return []frame{first(m[:i]), cont(m[i : i+3]), last(m[i+3:])}
		}),
	)
	return cs
}

func closeCases() []wsCase {
	var cs []wsCase
	echoClose := func(num, desc string, f frame, want uint16) wsCase {
		return wsCase{id: num, desc: desc, run: func(c *client) {
			c.send(f)
			c.expectClose(want)
		}}
	}
	cs = append(cs,
		wsCase{id: "7.1.1", desc: "echo, then close", run: func(c *client) {
			c.send(text(bayeux("hello")))
			c.expectEcho("hello")
			c.closeNormally()
		}},
		wsCase{id: "7.1.2", desc: "two close frames", run: func(c *client) {
			c.send(closeFrame(1000, ""), closeFrame(1000, ""))
			c.expectClose(1000)
		}},
		wsCase{id: "7.1.3", desc: "ping after close is not answered", run: func(c *client) {
			c.send(closeFrame(1000, ""), ping("late"))
			c.expectClose(1000)
		}},
		wsCase{id: "7.1.4", desc: "text after close is not answered", run: func(c *client) {
			c.send(closeFrame(1000, ""), text(bayeux("late")))
			c.expectClose(1000)
		}},
		wsCase{id: "7.1.5", desc: "close between the fragments of a message", run: func(c *client) {
			m := bayeux("cut")
			c.send(first(m[:10]), closeFrame(1000, ""), last(m[10:]))
			c.expectClose(1000)
		}},
		wsCase{id: "7.1.6", desc: "a large message, a ping, then close", run: func(c *client) {
			id := payloadOfLen(128 << 10)
			c.send(text(bayeux(id)), ping("p"), closeFrame(1000, ""))
			// The pong may come before or after the reply; both before the close.
			echoed, ponged := false, false
			for !echoed || !ponged {
				if f := c.read(); f.op == opPong && string(f.payload) == "p" {
					ponged = true
				} else if f.op == opText && bytes.Contains(f.payload, []byte(id)) {
					echoed = true
				} else {
					c.t.Fatalf("want the reply and the pong, got opcode %d %.80q", f.op, f.payload)
				}
			}
			c.expectClose(1000)
		}},
		echoClose("7.3.1", "close without payload", frame{fin: true, op: opClose}, 0),
		failCase("7.3.2", "close with a 1-byte payload", 1002, frame{fin: true, op: opClose, payload: []byte{0x03}}),
		echoClose("7.3.3", "close 1000 without reason", closeFrame(1000, ""), 1000),
		echoClose("7.3.4", "close 1000 with a reason", closeFrame(1000, "Hello World!"), 1000),
		echoClose("7.3.5", "close 1000 with a 123-byte reason", closeFrame(1000, strings.Repeat("*", 123)), 1000),
		failCase("7.3.6", "close with a 124-byte reason (126-byte payload)", 1002, closeFrame(1000, strings.Repeat("*", 124))),
		failCase("7.5.1", "close reason not UTF-8", 1007, closeFrame(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")),
	)
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cs = append(cs, echoClose(fmt.Sprintf("7.7.%d", i+1), fmt.Sprintf("valid close code %d", code), closeFrame(code, ""), code))
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cs = append(cs, failCase(fmt.Sprintf("7.9.%d", i+1), fmt.Sprintf("invalid close code %d", code), 1002, closeFrame(code, "")))
	}
	return cs
}

// limit is the node's default --max-request-bytes.
const limit = 1 << 20

// bigRequest is a Bayeux array of n bytes exactly, of messages of at most
// 200 KB (under the per-message limit), and the ids it holds.
func bigRequest(n int) ([]byte, []string) {
	var ids []string
	var b []byte
	b = append(b, '[')
	for i := 0; ; i++ {
		head := fmt.Sprintf(`{"channel":"/meta/connect","clientId":"conformance","connectionType":"websocket","id":"%d-`, i)
		room := n - len(b) - len(head) - len(`"}]`)
		if i > 0 {
			room-- // the comma
		}
		size := min(room, 200<<10)
		if i > 0 {
			b = append(b, ',')
		}
		id := fmt.Sprintf("%d-", i) + strings.Repeat("y", size)
		b = append(b, head...)
		b = append(b, strings.Repeat("y", size)...)
		b = append(b, `"}`...)
		ids = append(ids, id)
		if size == room {
			return append(b, ']'), ids
		}
	}
}

// expectEchoes reads replies until every id has been answered.
func (c *client) expectEchoes(ids []string) {
	c.t.Helper()
	f := c.read()
	for _, id := range ids {
		if !bytes.Contains(f.payload, []byte(`"id":"`+id+`"`)) {
			c.t.Fatalf("reply of %d bytes lacks id %.20q...", len(f.payload), id)
		}
	}
}

func limitCases() []wsCase {
	atLimit, ids := bigRequest(limit)
	over, _ := bigRequest(limit + 1)
	var cs []wsCase
	for i, n := range []int{64 << 10, 256 << 10, limit} {
		req, ids := bigRequest(n)
		cs = append(cs, wsCase{id: fmt.Sprintf("9.1.%d", i+1), desc: fmt.Sprintf("text message of %d bytes", n), run: func(c *client) {
			c.send(text(req))
			c.expectEchoes(ids)
			c.closeNormally()
		}})
	}
	cs = append(cs,
		failCase("9.1.4", "text message one byte over the limit", 1009, text(over)),
		failCase("9.1.5", "16 MiB declared, only the header sent", 1009, frame{fin: true, op: opText, length: 16 << 20}),
		failCase("9.1.6", "2^63-1 bytes declared", 1009, frame{fin: true, op: opText, length: 1<<63 - 1}),
		failCase("9.2.1", "binary message of 1 MiB", 1003, binaryMsg(atLimit)),
	)
	for i, n := range []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, limit} {
		split := fragments(n)
		cs = append(cs, wsCase{id: fmt.Sprintf("9.3.%d", i+1), desc: fmt.Sprintf("1 MiB message in fragments of %d bytes", n), run: func(c *client) {
			c.send(split(atLimit)...)
			c.expectEchoes(ids)
			c.closeNormally()
		}})
	}
	cs = append(cs, wsCase{id: "9.3.9", desc: "fragments adding up to one byte over the limit", run: func(c *client) {
		c.loose = true
		c.send(fragments(64 << 10)(over)...)
		c.expectClose(1009)
	}})
	for i, n := range []int{64, 512, 4 << 10, 32 << 10} {
		cs = append(cs, wsCase{id: fmt.Sprintf("9.5.%d", i+1), desc: fmt.Sprintf("1 MiB message in TCP writes of %d bytes", n), run: func(c *client) {
			c.chop = n
			c.send(text(atLimit))
			c.expectEchoes(ids)
			c.closeNormally()
		}})
	}
	cs = append(cs, wsCase{id: "9.7.1", desc: "1000 messages one after another", run: func(c *client) {
		for i := range 1000 {
			id := fmt.Sprintf("m%d", i)
			c.send(text(bayeux(id)))
			c.expectEcho(id)
		}
		c.closeNormally()
	}}, wsCase{id: "9.7.2", desc: "1000 messages pipelined", run: func(c *client) {
		var frames []frame
		for i := range 1000 {
			frames = append(frames, text(bayeux(fmt.Sprintf("m%d", i))))
		}
		sent := c.sendAsync(frames...) // the replies are read meanwhile
		for i := range 1000 {
			c.expectEcho(fmt.Sprintf("m%d", i))
		}
		if err := <-sent; err != nil {
			c.t.Fatalf("write: %v", err)
		}
		c.closeNormally()
	}})
	return cs
}
