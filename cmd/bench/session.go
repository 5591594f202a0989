package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// session is one lean Bayeux session of the tool: a raw websocket or
// long-polling transport, responses scanned in place (scanMessages) rather
// than decoded, and one goroutine per session (the websocket reader, or
// the long-polling connect loop). It speaks the subset of Bayeux the
// scenarios need: handshake (optionally with the ack extension),
// subscribe, connect, publish, disconnect.
type session struct {
	url       string
	transport string
	httpc     *http.Client
	onMsg     func(*wireMsg) // every message but connect replies; on the session's goroutine (and, long-polling, the publisher's)

	id      string
	ack     bool  // the server accepted the ack extension
	lastAck int64 // ext.ack of the last connect reply (connect loop only)
	ws      *websocket.Conn

	ctx      context.Context // cancelled by close
	cancel   context.CancelFunc
	started  bool
	done     chan struct{} // closed when the connect loop ended
	failures atomic.Int64  // connects refused or failed
	fatal    atomic.Pointer[string]
}

const (
	chHandshake   = "/meta/handshake"
	chConnect     = "/meta/connect"
	chSubscribe   = "/meta/subscribe"
	chDisconnect  = "/meta/disconnect"
	maxFrameBytes = 64 << 20
)

// dialSession opens the transport and handshakes.
func dialSession(ctx context.Context, url, transport string, httpc *http.Client, ack, deflate bool) (*session, error) {
	s := &session{url: url, transport: transport, httpc: httpc, lastAck: -1, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if transport == "websocket" {
		opts := &websocket.DialOptions{HTTPClient: httpc}
		if deflate {
			opts.CompressionMode, opts.CompressionThreshold = websocket.CompressionNoContextTakeover, 128
		}
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), opts)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("websocket dial: %w", err)
		}
		ws.SetReadLimit(maxFrameBytes)
		s.ws = ws
	}
	// Message ids here are labels, not a counter; "H" (not a counter)
	// tells the server not to order this session's messages by id.
	hs := msgBuilder("[").open(chHandshake, "", "H").str("version", "1.0").
		raw("supportedConnectionTypes", []byte(`["`+transport+`"]`))
	if ack {
		hs = hs.raw("ext", []byte(`{"ack":true}`))
	}
	var fail error
	err := s.call(ctx, append(hs.close(), ']'), chHandshake, func(m *wireMsg) {
		if m.Successful != 1 || len(m.ClientID) == 0 {
			fail = fmt.Errorf("handshake refused: %s", m.Error)
			return
		}
		s.id = string(m.ClientID)
		s.ack = ack && len(m.Ext) > 0 && bytes.Contains(m.Ext, []byte(`"ack":true`))
	})
	if err == nil {
		err = fail
	}
	if err != nil {
		s.abort()
		return nil, err
	}
	return s, nil
}

// call sends body and hands the reply on channel want to fn. Before start
// only (it reads the websocket itself).
func (s *session) call(ctx context.Context, body []byte, want string, fn func(*wireMsg)) error {
	got := false
	handle := func(m *wireMsg) {
		if string(m.Channel) == want && m.Successful >= 0 {
			got = true
			fn(m)
		} else if s.onMsg != nil {
			s.onMsg(m)
		}
	}
	if s.ws == nil {
		resp, err := s.post(ctx, body)
		if err != nil {
			return err
		}
		if err := scanMessages(resp, handle); err != nil {
			return err
		}
		if !got {
			return fmt.Errorf("no %s reply in %q", want, excerpt(resp))
		}
		return nil
	}
	if err := s.ws.Write(ctx, websocket.MessageText, body); err != nil {
		return err
	}
	for !got {
		_, frame, err := s.ws.Read(ctx)
		if err != nil {
			return err
		}
		if err := scanMessages(frame, handle); err != nil {
			return err
		}
	}
	return nil
}

// subscribe subscribes to channel and waits for the confirmation.
func (s *session) subscribe(ctx context.Context, channel string) error {
	body := msgBuilder("[").open(chSubscribe, s.id, "s").str("subscription", channel).close()
	var fail error
	err := s.call(ctx, append(body, ']'), chSubscribe, func(m *wireMsg) {
		if m.Successful != 1 {
			fail = fmt.Errorf("subscribe %s refused: %s", channel, m.Error)
		}
	})
	if err == nil {
		err = fail
	}
	return err
}

// start runs the connect loop on its own goroutine; on a websocket the
// same goroutine reads every frame and hands the messages to onMsg.
func (s *session) start() {
	s.started = true
	go func() {
		defer close(s.done)
		if s.ws != nil {
			s.wsLoop()
		} else {
			s.lpLoop()
		}
	}()
}

func (s *session) connectMsg(n int64) []byte {
	b := msgBuilder("[").open(chConnect, s.id, "c"+strconv.FormatInt(n, 10)).str("connectionType", s.transport)
	if s.ack {
		b = b.raw("ext", strconv.AppendInt([]byte(`{"ack":`), s.lastAck, 10))
		b = append(b, '}')
	}
	return append(b.close(), ']')
}

// connectReply notes a connect reply; false means the session is over.
func (s *session) connectReply(m *wireMsg) bool {
	if m.Successful == 1 {
		if s.ack && len(m.Ext) > 0 {
			if a, ok := intField(m.Ext, "ack"); ok && a > s.lastAck {
				s.lastAck = a
			}
		}
		// After a disconnect the held connect ends with advice none.
		return !bytes.Contains(m.Advice, []byte(`"none"`))
	}
	s.failures.Add(1)
	if bytes.Contains(m.Advice, []byte(`"handshake"`)) || bytes.Contains(m.Advice, []byte(`"none"`)) {
		msg := fmt.Sprintf("connect refused: %s (advice %s)", m.Error, m.Advice)
		s.fatal.Store(&msg)
		return false
	}
	return true
}

func (s *session) wsLoop() {
	var n int64
	if s.ws.Write(s.ctx, websocket.MessageText, s.connectMsg(n)) != nil {
		return
	}
	for {
		_, frame, err := s.ws.Read(s.ctx)
		if err != nil {
			if s.ctx.Err() == nil {
				msg := "websocket: " + err.Error()
				s.fatal.Store(&msg)
			}
			return
		}
		again := false
		ok := true
		err = scanMessages(frame, func(m *wireMsg) {
			if string(m.Channel) == chConnect {
				again = true
				ok = ok && s.connectReply(m)
				return
			}
			s.onMsg(m)
		})
		if err != nil {
			msg := fmt.Sprintf("bad frame %q: %v", excerpt(frame), err)
			s.fatal.Store(&msg)
			return
		}
		if !ok {
			return
		}
		if again {
			n++
			if s.ws.Write(s.ctx, websocket.MessageText, s.connectMsg(n)) != nil {
				return
			}
		}
	}
}

func (s *session) lpLoop() {
	for n := int64(0); s.ctx.Err() == nil; n++ {
		resp, err := s.post(s.ctx, s.connectMsg(n))
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.failures.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ok := true
		err = scanMessages(resp, func(m *wireMsg) {
			if string(m.Channel) == chConnect {
				ok = ok && s.connectReply(m)
				return
			}
			s.onMsg(m)
		})
		if err != nil {
			msg := fmt.Sprintf("bad response %q: %v", excerpt(resp), err)
			s.fatal.Store(&msg)
			return
		}
		if !ok {
			return
		}
	}
}

// send hands a request to the server: a frame, or a POST whose response
// is scanned into onMsg before send returns.
func (s *session) send(ctx context.Context, body []byte) error {
	if s.ws != nil {
		return s.ws.Write(ctx, websocket.MessageText, body)
	}
	resp, err := s.post(ctx, body)
	if err != nil {
		return err
	}
	return scanMessages(resp, s.onMsg)
}

// post is one long-polling request.
func (s *session) post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json;charset=UTF-8")
	resp, err := s.httpc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFrameBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("HTTP %s: %q", resp.Status, excerpt(data))
	}
	return data, nil
}

// close disconnects (best effort, bounded by ctx) and stops the session.
func (s *session) close(ctx context.Context) {
	if s.id != "" {
		body := msgBuilder("[").open(chDisconnect, s.id, "d").close()
		body = append(body, ']')
		if s.ws != nil {
			_ = s.ws.Write(ctx, websocket.MessageText, body)
		} else {
			_, _ = s.post(ctx, body)
		}
	}
	s.abort()
	if !s.started {
		return
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}

// abort stops the session without a goodbye.
func (s *session) abort() {
	s.cancel()
	if s.ws != nil {
		_ = s.ws.CloseNow()
	}
}

// err is why the session ended early, if it did.
func (s *session) err() error {
	if p := s.fatal.Load(); p != nil {
		return errors.New(*p)
	}
	return nil
}

func excerpt(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// sessionSet is every session of a run, for closing them all.
type sessionSet struct {
	mu   sync.Mutex
	list []*session
}

func (ss *sessionSet) add(s *session) {
	ss.mu.Lock()
	ss.list = append(ss.list, s)
	ss.mu.Unlock()
}

// closeAll closes every session, 64 at a time, within d.
func (ss *sessionSet) closeAll(d time.Duration) {
	ss.mu.Lock()
	list := ss.list
	ss.list = nil
	ss.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, s := range list {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.close(ctx)
		}()
	}
	wg.Wait()
}
