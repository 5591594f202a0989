package broker

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// TestFrameTextCompressed builds messages as flushOnce does (replies
// pending in out, publications, a connect reply) and checks the
// compressed frame inflates to the same JSON, with or without each part.
func TestFrameTextCompressed(t *testing.T) {
	pub := func(i int) *engine.Publication {
		return &engine.Publication{Channel: "/chat", Payload: fmt.Appendf(nil,
			`{"channel":"/chat","data":{"text":"%s","n":%d},"id":"%d"}`, strings.Repeat("hello there ", 10), i, i)}
	}
	ok := true
	reply := &protocol.Reply{Channel: "/meta/connect", ID: []byte(`"9"`), Successful: &ok}
	outOf := func(n int) [][]byte {
		var out [][]byte
		for i := range n {
			out = append(out, fmt.Appendf(nil, `[{"channel":"/meta/subscribe","id":"%d","successful":true,"subscription":"/a/very/long/channel/name/%d"}]`, i, i))
		}
		return append(out, []byte("[]"))
	}
	for _, c := range []struct {
		out     int
		pubs    int
		connect bool
	}{{0, 1, false}, {0, 3, false}, {0, 2, true}, {2, 0, false}, {2, 3, true}, {1, 1, false}, {0, 0, true}} {
		conn := &wsConn{dfl: wsframe.NewDeflate()}
		var pubs []*engine.Publication
		for i := range c.pubs {
			pubs = append(pubs, pub(i))
		}
		var cr *protocol.Reply
		if c.connect {
			cr = reply
		}
		out := outOf(c.out)
		if c.out == 0 {
			out = nil
		}
		var buf []byte
		if len(out) == 0 {
			buf = appendResponse(wsframe.ReserveHeader(nil), nil, pubs, cr)
		} else {
			buf = mergeArrays(out, appendResponse(nil, nil, pubs, cr))
		}
		want := bytes.Clone(buf[wsframe.MaxHeaderLen:])
		f := conn.frameText(buf, out, pubs)
		if len(want) < wsframe.MinCompress {
			if f[0] != 0x81 {
				t.Fatalf("%+v: small message compressed", c)
			}
			continue
		}
		if f[0] != 0x81|0x40 || f[1]&0x80 != 0 {
			t.Fatalf("%+v: first bytes % x", c, f[:2])
		}
		hdr := 2
		switch f[1] {
		case 126:
			hdr = 4
		case 127:
			hdr = 10
		}
		tail := []byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}
		got, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(f[hdr:]), bytes.NewReader(tail))))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%+v: inflated %q (%v), want %q", c, got, err, want)
		}
		for _, p := range pubs { // each compressed as a shared segment
			if !conn.dfl.Cached(p.Payload) {
				t.Fatalf("%+v: publication %s not compressed as a shared segment", c, p.Payload[:40])
			}
		}
	}
}
