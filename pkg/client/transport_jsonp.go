package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// callbackPolling is the callback-polling transport: each request is its
// own HTTP GET carrying the JSON array in the "message" query parameter
// and a callback name in "jsonp"; the response is a JavaScript call of the
// callback with the JSON array (JSONP).
type callbackPolling struct {
	c    *Client
	base string // Config.URL with "?" or "&" appended, ready for parameters
	next atomic.Int64
}

// jsonpOverhead is the escaped "[" and "]" around the array; jsonpComma is
// the escaped "," between two messages (url.QueryEscape escapes byte by
// byte, so a concatenation's escape is the concatenation of the escapes).
const (
	jsonpOverhead = len("%5B%5D")
	jsonpComma    = len("%2C")
)

func newCallbackPolling(c *Client) (*callbackPolling, error) {
	u, err := url.Parse(c.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("client: URL %q: %w", c.cfg.URL, err)
	}
	u.Fragment, u.RawFragment = "", ""
	base := u.String()
	if u.RawQuery != "" {
		base += "&"
	} else {
		base = strings.TrimSuffix(base, "?") + "?"
	}
	return &callbackPolling{c: c, base: base}, nil
}

// send sends msgs (body is their JSON array) and hands every response's
// messages to handleIncoming before returning. A batch whose URL would be
// longer than Config.MaxURLLength is split into several requests, sent one
// after the other in order; a single message too large for one URL is an
// error (not a transport error: sending it again cannot help).
func (cp *callbackPolling) send(ctx context.Context, msgs []*protocol.Message, body []byte) error {
	cbName := "__bayeux_cb" + strconv.FormatInt(cp.next.Add(1), 10)
	fixed := len(cp.base) + len("message=&jsonp=") + len(cbName)
	limit := cp.c.cfg.MaxURLLength
	escaped := url.QueryEscape(string(body))
	if fixed+len(escaped) <= limit || len(msgs) <= 1 {
		if fixed+len(escaped) > limit {
			return cp.tooLarge(msgs[0], fixed+len(escaped))
		}
		return cp.get(ctx, escaped, cbName)
	}
	// Split: greedy packing of the escaped messages, in order.
	var chunk []string
	size := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := cp.get(ctx, "%5B"+strings.Join(chunk, "%2C")+"%5D", cbName)
		chunk, size = chunk[:0], 0
		return err
	}
	for _, m := range msgs {
		raw, err := json.Marshal(m)
		if err != nil {
			return err
		}
		e := url.QueryEscape(string(raw))
		if fixed+jsonpOverhead+len(e) > limit {
			return cp.tooLarge(m, fixed+jsonpOverhead+len(e))
		}
		if len(chunk) > 0 && fixed+jsonpOverhead+size+jsonpComma+len(e) > limit {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(chunk) > 0 {
			size += jsonpComma
		}
		chunk = append(chunk, e)
		size += len(e)
	}
	return flush()
}

func (cp *callbackPolling) tooLarge(m *protocol.Message, n int) error {
	return fmt.Errorf("callback-polling: %s message needs a URL of %d bytes, more than Config.MaxURLLength (%d)",
		m.Channel, n, cp.c.cfg.MaxURLLength)
}

// get sends one GET with the escaped JSON array and decodes its JSONP
// response.
func (cp *callbackPolling) get(ctx context.Context, escapedMsgs, cbName string) error {
	c := cp.c
	u := cp.base + "message=" + escapedMsgs + "&jsonp=" + cbName
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	// net/http silently sends an idempotent request again when a reused
	// connection fails before the response, and a GET without a body is
	// idempotent to it. A Bayeux request is not: a /meta/connect sent
	// again makes the server take the lost reply as received (its messages
	// are lost without the ack extension, and the client never learns that
	// the connect failed), a publish sent again is published twice. A body
	// without GetBody makes the request not replayable (see
	// http.Transport); being empty, it is not sent.
	req.Body = noReplayBody{}
	for k, v := range c.cfg.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/javascript, application/javascript, */*")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return &transportError{err}
	}
	defer resp.Body.Close()
	data, err := c.readBody(resp)
	if err != nil {
		return err
	}
	msgs, perr := parseJSONP(data, cbName)
	if perr != nil {
		// Request-level errors (HTTP 4xx) come as plain JSON.
		if resp.StatusCode/100 != 2 {
			if plain, err := decodeMsgs(data); err == nil {
				return c.httpResult(resp, plain)
			}
			return &transportError{fmt.Errorf("HTTP %s", resp.Status)}
		}
		return &transportError{fmt.Errorf("bad JSONP response: %w", perr)}
	}
	return c.httpResult(resp, msgs)
}

var errNotJSONP = errors.New("not a JSONP call")

// parseJSONP decodes body, a call of callback with a JSON array (or one
// object): optional whitespace and "/**/" comment, the callback name, "(",
// the JSON, ")" and an optional ";".
func parseJSONP(body []byte, callback string) ([]*wireMsg, error) {
	b := bytes.TrimSpace(body)
	if rest, ok := bytes.CutPrefix(b, []byte("/**/")); ok {
		b = bytes.TrimSpace(rest)
	}
	rest, ok := bytes.CutPrefix(b, []byte(callback))
	if !ok {
		return nil, fmt.Errorf("%w of %s: %q", errNotJSONP, callback, excerpt(b))
	}
	rest = bytes.TrimLeft(rest, " \t\r\n")
	if len(rest) == 0 || rest[0] != '(' {
		return nil, fmt.Errorf("%w of %s: %q", errNotJSONP, callback, excerpt(b))
	}
	rest = bytes.TrimSpace(rest[1:])
	if r, ok := bytes.CutSuffix(rest, []byte(";")); ok {
		rest = bytes.TrimSpace(r)
	}
	inner, ok := bytes.CutSuffix(rest, []byte(")"))
	if !ok {
		return nil, fmt.Errorf("%w of %s: no closing parenthesis", errNotJSONP, callback)
	}
	msgs, err := decodeMsgs(inner)
	if err != nil {
		return nil, fmt.Errorf("callback argument: %w", err)
	}
	return msgs, nil
}

func excerpt(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// noReplayBody is an empty request body that net/http cannot rewind, so it
// never replays the request on its own.
type noReplayBody struct{}

func (noReplayBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noReplayBody) Close() error             { return nil }
