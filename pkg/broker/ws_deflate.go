package broker

import (
	"bytes"
	"net/http"

	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/broker/wsframe"
)

// Websocket compression (permessage-deflate, RFC 7692): negotiated when a
// client offers it, unless Config.DisableWebSocketCompression; always
// without context takeover, so that an idle socket holds no compressor or
// decompressor (the Broker's wsframe.Deflate pools them).

// newWSDeflate returns the broker's pool of compressors, nil when
// compression is off.
func newWSDeflate(cfg Config) *wsframe.Deflate {
	if cfg.DisableWebSocketCompression {
		return nil
	}
	return wsframe.NewDeflate()
}

// negotiateDeflate accepts a client's offer of permessage-deflate in the
// upgrade response h: it returns the Deflate the socket then uses, or nil.
func (b *Broker) negotiateDeflate(r *http.Request, h http.Header) *wsframe.Deflate {
	if b.wsDeflate == nil || !wsframe.NegotiateDeflate(r.Header) {
		return nil
	}
	h.Set("Sec-WebSocket-Extensions", wsframe.DeflateResponse)
	return b.wsDeflate
}

// frameText frames a text message built after wsframe.MaxHeaderLen
// reserved bytes (as flushOnce builds it: the replies of out, then pubs,
// then a connect reply), compressed if the socket negotiated it and the
// message is large enough to gain. Each publication is compressed once
// for every socket it goes to (a shared segment, see wsframe.Deflate);
// the rest of the message is compressed for this socket.
func (conn *wsConn) frameText(buf []byte, out [][]byte, pubs []*engine.Publication) []byte {
	body := buf[wsframe.MaxHeaderLen:]
	if conn.dfl == nil || len(body) < wsframe.MinCompress {
		return wsframe.Frame(buf, wsframe.OpText)
	}
	m := conn.dfl.Message(len(body))
	own, i := 0, pubsStart(out)
	for _, p := range pubs {
		end := i + len(p.Payload)
		if end > len(body) || !bytes.Equal(body[i:end], p.Payload) {
			break // not laid out as expected: the rest is compressed as own bytes
		}
		m.Own(body[own:i]...)
		m.Shared(p.Payload)
		own, i = end, end+1 // the comma before the next one
	}
	m.Own(body[own:]...)
	return m.Frame(wsframe.OpText)
}

// pubsStart is the offset of the first publication in a message built
// from out and publications: after "[" and the items of out's arrays
// (mergeArrays) and their comma.
func pubsStart(out [][]byte) int {
	n, items := 1, 0
	for _, o := range out {
		if len(o) > 2 {
			n += len(o) - 2
			items++
		}
	}
	if items > 0 {
		n += items // the commas between them, and the one after
	}
	return n
}
