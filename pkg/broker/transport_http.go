package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// ServeHTTP serves every transport on one URL (and any sub-path, such as the
// CometD client's /handshake and /connect suffixes): POST is long-polling,
// GET with a message parameter is callback-polling, a GET upgrade is
// websocket, OPTIONS is a CORS preflight.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("X-Content-Type-Options", "nosniff")
	if origin := r.Header.Get("Origin"); origin != "" {
		if !b.originAllowed(origin) {
			httpError(w, http.StatusForbidden, protocol.NewError(protocol.CodeDenied, "Origin not allowed"))
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	switch {
	case r.Method == http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
		}
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodGet && isUpgrade(r):
		if !b.supported[protocol.WebSocket] {
			httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeConnectionType, "websocket transport disabled"))
			return
		}
		b.serveWebSocket(w, r)
	case r.Method == http.MethodPost:
		if !b.supported[protocol.LongPolling] {
			httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeConnectionType, "long-polling transport disabled"))
			return
		}
		b.serveLongPolling(w, r)
	case r.Method == http.MethodGet:
		if !b.supported[protocol.CallbackPolling] {
			httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeConnectionType, "callback-polling transport disabled"))
			return
		}
		b.serveCallbackPolling(w, r)
	default:
		h.Set("Allow", "GET, POST, OPTIONS")
		httpError(w, http.StatusMethodNotAllowed, protocol.NewError(protocol.CodeBadRequest, "Method not allowed", r.Method))
	}
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// originAllowed matches the Origin's host against AllowedOrigins.
func (b *Broker) originAllowed(origin string) bool {
	if len(b.cfg.AllowedOrigins) == 0 {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	for _, p := range b.cfg.AllowedOrigins {
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(u.Host)); ok {
			return true
		}
	}
	return false
}

// httpError answers a request-level error with an HTTP status and a JSON
// body carrying the Bayeux error.
func httpError(w http.ResponseWriter, status int, err *protocol.Error) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	body := append([]byte(`{"successful":false,"error":`), protocol.AppendString(nil, err.String())...)
	_, _ = w.Write(append(body, '}', '\n'))
}

func requestErrorStatus(err *protocol.Error) int {
	if err.Code == protocol.CodeTooLarge {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func (b *Broker) serveLongPolling(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, b.cfg.MaxRequestBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, protocol.NewError(protocol.CodeTooLarge, "Request too large"))
		} else {
			httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Cannot read request body"))
		}
		return
	}
	var msgs []*protocol.Message
	var formParts []string
	form := isFormContent(r.Header.Get("Content-Type"))
	trimmed := bytes.TrimSpace(body)
	isJSON := len(trimmed) > 0 && (trimmed[0] == '[' || trimmed[0] == '{')
	if form && !isJSON {
		form, perr := url.ParseQuery(string(body))
		if perr != nil || len(form["message"]) == 0 {
			httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Missing message parameter"))
			return
		}
		formParts = form["message"]
		msgs, err = b.decodeParts(formParts)
	} else {
		msgs, err = protocol.Decode(body, b.cfg.Limits)
	}
	if err != nil {
		var re *protocol.RequestError
		if errors.As(err, &re) {
			httpError(w, requestErrorStatus(re.Err), re.Err)
			return
		}
		httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Bad request"))
		return
	}
	var parts [][]byte
	if form && !isJSON {
		parts = stringsToBytes(formParts)
	} else {
		parts = [][]byte{body}
	}
	out := b.serveHTTPMessages(w, r, protocol.LongPolling, msgs, parts)
	if out == nil {
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("Content-Length", strconv.Itoa(len(out))) // one write, not chunks
	_, _ = w.Write(out)
}

// jsonContentType is the Content-Type of every JSON reply, shared by all
// of them (net/http only reads header values): setting it allocates
// nothing. Never modified.
var jsonContentType = []string{"application/json;charset=UTF-8"}

// readBody reads a request body of at most limit bytes: into one buffer of
// the announced Content-Length when there is one, else growing.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n > 0 && n <= limit {
		buf := make([]byte, n)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, err // a body cut short: net/http reports io.ErrUnexpectedEOF
		}
		return buf, nil // net/http ends the body at Content-Length
	}
	return io.ReadAll(body)
}

// isFormContent reports whether a Content-Type is
// application/x-www-form-urlencoded (parameters ignored), without
// mime.ParseMediaType's allocations.
func isFormContent(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "application/x-www-form-urlencoded")
}

func (b *Broker) decodeParts(parts []string) ([]*protocol.Message, error) {
	var msgs []*protocol.Message
	var err error
	for _, p := range parts {
		if msgs, err = protocol.DecodeAppend(msgs, []byte(p), b.cfg.Limits); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

// defaultCallback names the JSONP callback of a callback-polling request
// that gives neither jsonp nor jsonpcallback (Faye's default).
const defaultCallback = "jsonpcallback"

func (b *Broker) serveCallbackPolling(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(r.URL.RawQuery) > int(b.cfg.MaxRequestBytes) {
		httpError(w, http.StatusRequestEntityTooLarge, protocol.NewError(protocol.CodeTooLarge, "Request too large"))
		return
	}
	cb := q.Get("jsonp")
	if cb == "" {
		cb = q.Get("jsonpcallback")
	}
	if cb == "" {
		cb = defaultCallback // as Faye's server does
	}
	if !validCallback(cb) {
		httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Invalid jsonp callback name"))
		return
	}
	if len(q["message"]) == 0 {
		httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Missing message parameter"))
		return
	}
	msgs, err := b.decodeParts(q["message"])
	if err != nil {
		var re *protocol.RequestError
		if errors.As(err, &re) {
			httpError(w, requestErrorStatus(re.Err), re.Err)
			return
		}
		httpError(w, http.StatusBadRequest, protocol.NewError(protocol.CodeBadRequest, "Bad request"))
		return
	}
	out := b.serveHTTPMessages(w, r, protocol.CallbackPolling, msgs, stringsToBytes(q["message"]))
	if out == nil {
		return
	}
	w.Header().Set("Content-Type", "text/javascript;charset=UTF-8")
	_, _ = w.Write(appendJSONP(make([]byte, 0, len(out)+len(cb)+8), cb, out))
}

// serveHTTPMessages serves a decoded HTTP request through Broker.serve,
// holding its connect if it carries one, and returns the JSON response
// (nil if nothing must be written: the client went away, or the connection
// was taken over by a parked long-poll).
func (b *Broker) serveHTTPMessages(w http.ResponseWriter, r *http.Request, transport string, msgs []*protocol.Message, parts [][]byte) []byte {
	browserID := ""
	if cookie, _ := r.Cookie(b.cfg.BrowserCookie); cookie != nil && cookie.Value != "" && len(cookie.Value) <= 64 {
		browserID = cookie.Value
	}
	ctx := r.Context()
	if holdsConnect(msgs) && b.log.Enabled(ctx, slog.LevelDebug) {
		start := time.Now()
		defer func() {
			b.log.Debug("http connect request ended", "session", clientIDOf(msgs), "transport", transport, "took", time.Since(start), "gone", ctx.Err() != nil)
		}()
	}
	out := b.serve(ctx, &inbound{
		info:      RequestInfo{Transport: transport, RemoteAddr: b.clientIP(r), Header: r.Header},
		browserID: browserID,
		msgs:      msgs,
		parts:     parts,
	})
	b.throttle(ctx, out.refused) // a flooding client waits for its answer
	res := out.res
	if res == nil { // forwarded: the owner's response
		if out.lost {
			lostReply(w)
			return nil
		}
		return out.body
	}
	if res.handshook && browserID == "" {
		http.SetCookie(w, &http.Cookie{
			Name: b.cfg.BrowserCookie, Value: newBrowserID(), Path: "/",
			HttpOnly: true, Secure: b.cfg.CookieSecure, SameSite: http.SameSiteLaxMode,
		})
	}
	hc := res.connect
	if hc == nil {
		return appendResponse(nil, res.replies, nil, nil)
	}
	wr := waitIdle
	if transport == protocol.LongPolling && !hc.immediate && hc.timeout > parkAfter {
		if wr = hc.wait(ctx, parkAfter); wr == waitIdle && b.parkLongPoll(w, r, hc, res.replies) {
			return nil // the connection is taken over (transport_park.go)
		}
	}
	if wr == waitIdle {
		wr = hc.wait(ctx, 0)
	}
	if wr == waitGone {
		hc.cancel()
		return nil
	}
	pubs, drop := hc.answer(true)
	if drop {
		dropConnection(w) // debug API: lose this reply in transit
		return nil
	}
	return appendResponse(nil, res.replies, pubs, hc.reply)
}

// lostReply answers a request whose connect reply was lost on its way
// from the session's owner (outcome.lost): 503 with a body that is not
// Bayeux, which every client treats as a failed request and retries.
func lostReply(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain;charset=UTF-8")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "session owner's reply lost; send the request again\n")
}

// dropConnection closes the request's connection without a response (the
// debug API's lost reply). Where the connection cannot be taken from
// net/http (HTTP/2), the reply is lost as a forwarded one is: a 503.
func dropConnection(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.NewError(protocol.CodeServerUnavailable, "Reply lost (debug API)"))
		return
	}
	_ = c.Close()
}

// parkAfter is how long a held long-polling connect waits in its handler
// before it is parked (taken out of net/http, transport_park.go). Under
// load most connects are answered within it, through net/http, which
// saves hijacking the connection and handing it back (new net/http
// connection state and 8 KB of buffers per request: 20% of the CPU of a
// long-polling fan-out went to allocating and collecting them); an idle
// connect is still parked within a fraction of its timeout.
const parkAfter = 100 * time.Millisecond

func stringsToBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func newBrowserID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
