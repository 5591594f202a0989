package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

type msg = map[string]any

// rawSubscriber is a minimal Bayeux client on one transport (long-polling,
// callback-polling or websocket) that subscribes and records the "data"
// of every delivery, as the wire carries it, in arrival order. It stops at
// the first failed connect (recording the error): it never re-handshakes, so
// a lost session shows up as a recorded error, not as a silent gap.
type rawSubscriber struct {
	t         testing.TB
	transport string
	endpoint  string
	client    *http.Client
	ws        *websocket.Conn
	id        string

	mu   sync.Mutex
	got  []json.RawMessage
	err  string // error of the connect that stopped the loop
	done chan struct{}
}

func newRawSubscriber(t testing.TB, endpoint, transport string, subs ...string) *rawSubscriber {
	t.Helper()
	s := &rawSubscriber{t: t, transport: transport, endpoint: endpoint, client: &http.Client{Timeout: 60 * time.Second}, done: make(chan struct{})}
	if transport == "websocket" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(endpoint, "http"), nil)
		cancel()
		if err != nil {
			t.Fatalf("ws dial %s: %v", endpoint, err)
		}
		c.SetReadLimit(64 << 20)
		s.ws = c
	}
	hs := s.exchange(context.Background(), msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{transport}})
	r := find(hs, "/meta/handshake")
	if r == nil || r["successful"] != true {
		t.Fatalf("%s handshake: %v", transport, hs)
	}
	s.id = r["clientId"].(string)
	s.exchange(context.Background(), s.connectMsg())
	sr := s.exchange(context.Background(), msg{"channel": "/meta/subscribe", "clientId": s.id, "subscription": subs})
	if r := find(sr, "/meta/subscribe"); r == nil || r["successful"] != true {
		t.Fatalf("%s subscribe %v: %v", transport, subs, sr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go s.loop(ctx)
	t.Cleanup(func() {
		cancel()
		if s.ws != nil {
			_ = s.ws.CloseNow()
		}
		<-s.done
	})
	return s
}

func (s *rawSubscriber) connectMsg() msg {
	return msg{"channel": "/meta/connect", "clientId": s.id, "connectionType": s.transport}
}

func (s *rawSubscriber) loop(ctx context.Context) {
	defer close(s.done)
	for ctx.Err() == nil {
		reply := s.exchange(ctx, s.connectMsg())
		if reply == nil {
			return
		}
		if r := find(reply, "/meta/connect"); r != nil && r["successful"] != true {
			s.mu.Lock()
			s.err = fmt.Sprint(r["error"])
			s.mu.Unlock()
			return
		}
	}
}

func (s *rawSubscriber) record(reply []msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range reply {
		if _, isReply := m["successful"]; isReply {
			continue
		}
		b, _ := json.Marshal(m["data"])
		s.got = append(s.got, b)
	}
}

// exchange sends one message and returns what came back until its reply
// (for websocket, frames until the reply to it arrives), recording
// deliveries as they arrive. It returns nil when ctx ends or the transport
// fails.
func (s *rawSubscriber) exchange(ctx context.Context, m msg) []msg {
	body, _ := json.Marshal([]msg{m})
	switch s.transport {
	case "websocket":
		if err := s.ws.Write(ctx, websocket.MessageText, body); err != nil {
			return nil
		}
		var all []msg
		for {
			_, b, err := s.ws.Read(ctx)
			if err != nil {
				return nil
			}
			var frame []msg
			if err := json.Unmarshal(b, &frame); err != nil {
				s.t.Errorf("ws frame %s: %v", b, err)
				return nil
			}
			s.record(frame)
			all = append(all, frame...)
			if find(frame, m["channel"].(string)) != nil {
				return all
			}
		}
	case "callback-polling":
		u := s.endpoint + "?jsonp=cb&message=" + url.QueryEscape(string(body))
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		b := s.do(req)
		b = bytes.TrimPrefix(b, []byte("/**/cb("))
		b = bytes.TrimSuffix(b, []byte(");"))
		out := s.decode(b)
		s.record(out)
		return out
	default:
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		out := s.decode(s.do(req))
		s.record(out)
		return out
	}
}

func (s *rawSubscriber) do(req *http.Request) []byte {
	resp, err := s.client.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

func (s *rawSubscriber) decode(b []byte) []msg {
	if b == nil {
		return nil
	}
	var out []msg
	if err := json.Unmarshal(b, &out); err != nil {
		s.t.Errorf("%s reply %q: %v", s.transport, b, err)
		return nil
	}
	return out
}

// received returns a copy of the deliveries so far and the stop error.
func (s *rawSubscriber) received() ([]string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.got))
	for i, b := range s.got {
		out[i] = string(b)
	}
	return out, s.err
}

func find(ms []msg, ch string) msg {
	for _, m := range ms {
		if m["channel"] == ch {
			return m
		}
	}
	return nil
}

// waitReceived waits until every subscriber has n deliveries (or stopped).
func waitReceived(t testing.TB, subs []*rawSubscriber, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		short := ""
		for i, s := range subs {
			got, err := s.received()
			if len(got) < n && err == "" {
				short = fmt.Sprintf("subscriber %d (%s) has %d of %d", i, s.transport, len(got), n)
				break
			}
		}
		if short == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all deliveries within %v: %s", d, short)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
