package bayeuxtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// Msg is a loosely typed Bayeux message.
type Msg = map[string]any

// Peer is a raw long-polling Bayeux peer of the endpoint URL.
type Peer struct {
	T      testing.TB
	URL    string
	Client *http.Client // nil: http.DefaultClient
}

// Post sends msgs as a JSON array and returns the decoded reply array.
func (p *Peer) Post(msgs ...Msg) []Msg {
	p.T.Helper()
	out, err := p.TryPost(msgs...)
	if err != nil {
		p.T.Fatal(err)
	}
	return out
}

// TryPost is Post that returns, instead of failing the test, an error for
// a reply that is not a JSON message array (for example the plain HTTP
// 503 a node answers when a forwarded request's reply was lost).
func (p *Peer) TryPost(msgs ...Msg) ([]Msg, error) {
	raw, err := json.Marshal(msgs)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Post(p.URL, "application/json", bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", p.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	var out []Msg
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("reply %d %q: %w", resp.StatusCode, body, err)
	}
	return out, nil
}

// Handshake handshakes (with ext, if not nil), performs the immediate first
// connect and returns the clientId.
func (p *Peer) Handshake(ext Msg) string {
	p.T.Helper()
	hs := Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	if ext != nil {
		hs["ext"] = ext
	}
	r := p.Post(hs)
	if len(r) != 1 || r[0]["successful"] != true {
		p.T.Fatalf("handshake: %v", r)
	}
	id := r[0]["clientId"].(string)
	p.Connect(id, nil)
	return id
}

// Connect sends one long-polling /meta/connect (with ext, if not nil),
// held as long as the server's timeout.
func (p *Peer) Connect(id string, ext Msg) []Msg {
	p.T.Helper()
	out, err := p.TryConnect(id, ext)
	if err != nil {
		p.T.Fatal(err)
	}
	return out
}

// TryConnect is Connect that returns, instead of failing the test, an
// error for a reply that is not a JSON message array (see TryPost).
func (p *Peer) TryConnect(id string, ext Msg) ([]Msg, error) {
	m := Msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"}
	if ext != nil {
		m["ext"] = ext
	}
	return p.TryPost(m)
}

// MustSucceed posts one message and fails the test unless it succeeds.
func (p *Peer) MustSucceed(m Msg) Msg {
	p.T.Helper()
	r := p.Post(m)
	if len(r) != 1 || r[0]["successful"] != true {
		p.T.Fatalf("%v: %v", m, r)
	}
	return r[0]
}

// Split separates deliveries (no "successful" field) from replies.
func Split(msgs []Msg) (deliveries, replies []Msg) {
	for _, m := range msgs {
		if _, ok := m["successful"]; ok {
			replies = append(replies, m)
		} else {
			deliveries = append(deliveries, m)
		}
	}
	return deliveries, replies
}

// Eventually polls f until it returns nil or d passes.
func Eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
