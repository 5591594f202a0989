package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

func decodeMsgs(body []byte) ([]*wireMsg, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		var m wireMsg
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, err
		}
		return []*wireMsg{&m}, nil
	}
	var msgs []*wireMsg
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, err
	}
	return msgs, nil
}

// httpResult hands a decoded HTTP response's messages to handleIncoming,
// or reports what went wrong: a non-2xx status whose body carries no reply
// (the server's request-level error, such as a disabled transport or a
// request too large) is a transport error naming the status and the
// server's error.
func (c *Client) httpResult(resp *http.Response, msgs []*wireMsg) error {
	if resp.StatusCode/100 != 2 {
		replies := false
		reason := ""
		for _, m := range msgs {
			if m == nil {
				continue
			}
			if m.Channel != "" {
				replies = true
			} else if m.Error != "" && reason == "" {
				reason = m.Error
			}
		}
		if !replies {
			if reason != "" {
				return &transportError{fmt.Errorf("HTTP %s: %s", resp.Status, reason)}
			}
			return &transportError{fmt.Errorf("HTTP %s", resp.Status)}
		}
	}
	// A non-2xx status with Bayeux replies: the replies say what failed.
	c.handleIncoming(msgs)
	return nil
}

// readBody reads a response body bounded by MaxMessageBytes.
func (c *Client) readBody(resp *http.Response) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxMessageBytes+1))
	if err != nil {
		return nil, &transportError{err}
	}
	if int64(len(data)) > c.cfg.MaxMessageBytes {
		return nil, &transportError{fmt.Errorf("response larger than %d bytes", c.cfg.MaxMessageBytes)}
	}
	return data, nil
}

// longPolling sends each request as its own HTTP POST.
type longPolling struct{ c *Client }

// post sends body and hands the response's messages to handleIncoming
// before returning.
func (lp *longPolling) post(ctx context.Context, body []byte) error {
	c := lp.c
	resp, err := lp.do(ctx, body)
	if err != nil && closedIdle(err) && ctx.Err() == nil {
		// The server (or a balancer reloading) closed the kept-alive
		// connection as idle while this request was on its way: it never
		// read the request, so sending it again on a new connection
		// cannot repeat it.
		resp, err = lp.do(ctx, body)
	}
	if err != nil {
		return &transportError{err}
	}
	defer resp.Body.Close()
	data, err := c.readBody(resp)
	if err != nil {
		return err
	}
	msgs, derr := decodeMsgs(data)
	if derr != nil {
		if resp.StatusCode/100 != 2 {
			return &transportError{fmt.Errorf("HTTP %s", resp.Status)}
		}
		return &transportError{fmt.Errorf("bad response: %w", derr)}
	}
	return c.httpResult(resp, msgs)
}

// do sends one POST.
func (lp *longPolling) do(ctx context.Context, body []byte) (*http.Response, error) {
	c := lp.c
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range c.cfg.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	return c.cfg.HTTPClient.Do(req)
}

// closedIdle reports net/http's error for a request sent on a kept-alive
// connection that the server had closed as idle (its FIN crossed the
// request): the server did not read the request. net/http retries only
// idempotent requests on it, and does not export the error.
func closedIdle(err error) bool {
	return strings.Contains(err.Error(), "http: server closed idle connection")
}

// wsTransport owns the current socket (dialled lazily, replaced when it
// dies).
type wsTransport struct {
	c *Client

	mu       sync.Mutex
	cur      *wsConn
	shutDown bool
	wg       sync.WaitGroup // reader and writer goroutines of every socket
}

type wsConn struct {
	ws     *websocket.Conn
	out    chan []byte
	done   chan struct{} // closed when the socket is dead
	once   sync.Once
	err    error
	errMu  sync.Mutex
	cancel context.CancelFunc
}

func (w *wsConn) fail(err error) {
	w.once.Do(func() {
		w.errMu.Lock()
		w.err = err
		w.errMu.Unlock()
		close(w.done)
		w.cancel()
	})
}

func (w *wsConn) error() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err == nil {
		return errors.New("websocket closed")
	}
	return w.err
}

// send hands a frame to the writer.
func (w *wsConn) send(ctx context.Context, frame []byte) error {
	select {
	case w.out <- frame:
		return nil
	case <-w.done:
		return &transportError{w.error()}
	case <-ctx.Done():
		return &transportError{ctx.Err()}
	}
}

// conn returns the live socket, dialling one if needed.
func (t *wsTransport) conn(ctx context.Context) (*wsConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.shutDown {
		return nil, ErrClosed
	}
	if t.cur != nil {
		select {
		case <-t.cur.done:
			t.cur = nil
		default:
			return t.cur, nil
		}
	}
	c := t.c
	// Dialling under t.mu: concurrent callers wait for the one socket.
	ws, _, err := websocket.Dial(ctx, c.cfg.WebSocketURL, &websocket.DialOptions{HTTPClient: c.cfg.HTTPClient, HTTPHeader: c.cfg.Header})
	if err != nil {
		return nil, &transportError{fmt.Errorf("websocket dial: %w", err)}
	}
	ws.SetReadLimit(c.cfg.MaxMessageBytes)
	cctx, cancel := context.WithCancel(c.ctx)
	conn := &wsConn{ws: ws, out: make(chan []byte), done: make(chan struct{}), cancel: cancel}
	t.cur = conn
	t.wg.Add(2)
	go func() { // writer: the only goroutine that writes to ws
		defer t.wg.Done()
		for {
			select {
			case <-cctx.Done():
				conn.fail(errors.New("websocket closed"))
				return
			case <-conn.done:
				return
			case f := <-conn.out:
				if err := ws.Write(cctx, websocket.MessageText, f); err != nil {
					conn.fail(err)
					return
				}
			}
		}
	}()
	go func() { // reader
		defer t.wg.Done()
		defer ws.CloseNow()
		for {
			_, data, err := ws.Read(cctx)
			if err != nil {
				conn.fail(err)
				return
			}
			msgs, err := decodeMsgs(data)
			if err != nil {
				conn.fail(fmt.Errorf("bad frame: %w", err))
				return
			}
			c.handleIncoming(msgs)
		}
	}()
	return conn, nil
}

// closeConn drops the current socket (the next request dials a new one).
func (t *wsTransport) closeConn() {
	t.mu.Lock()
	cur := t.cur
	t.cur = nil
	t.mu.Unlock()
	if cur != nil {
		cur.fail(errors.New("websocket closed by the client"))
	}
}

// shutdown closes the socket and waits for its goroutines.
func (t *wsTransport) shutdown() {
	t.mu.Lock()
	t.shutDown = true
	cur := t.cur
	t.cur = nil
	t.mu.Unlock()
	if cur != nil {
		cur.fail(errors.New("websocket closed by the client"))
	}
	t.wg.Wait()
}
