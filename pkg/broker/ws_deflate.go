package broker

import (
	"net/http"

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
// reserved bytes, compressed if the socket negotiated it. shared says the
// same content goes to many sockets (one publication pushed alone), so
// that it is compressed once for all of them.
func (conn *wsConn) frameText(buf []byte, shared bool) []byte {
	if conn.dfl == nil {
		return wsframe.Frame(buf, wsframe.OpText)
	}
	return conn.dfl.Frame(buf, wsframe.OpText, shared)
}
