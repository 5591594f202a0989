package ext

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

type Msg = bayeuxtest.Msg

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newPeer(t *testing.T) *bayeuxtest.Peer {
	t.Helper()
	b, err := broker.New(broker.Config{Timeout: time.Second, Extensions: []broker.Extension{Ack{}, TimeSync{}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	t.Cleanup(func() {
		_ = b.Shutdown(context.Background())
		srv.Close()
		cancel()
		<-done
	})
	return &bayeuxtest.Peer{T: t, URL: srv.URL, Client: &http.Client{}}
}

func ackOf(t *testing.T, replies []Msg) any {
	t.Helper()
	for _, r := range replies {
		if r["channel"] == "/meta/connect" {
			ext, _ := r["ext"].(map[string]any)
			return ext["ack"]
		}
	}
	t.Fatalf("no connect reply in %v", replies)
	return nil
}

func TestAckRedeliversUnacknowledgedInOrder(t *testing.T) {
	p := newPeer(t)
	hs := p.Post(Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}, "ext": Msg{"ack": true}})
	if ext, _ := hs[0]["ext"].(map[string]any); ext["ack"] != true {
		t.Fatalf("handshake reply ext = %v", hs[0]["ext"])
	}
	id := hs[0]["clientId"].(string)
	p.Connect(id, Msg{"ack": 0})
	p.MustSucceed(Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/ack"})
	pub := func(v int) { p.MustSucceed(Msg{"channel": "/ack", "clientId": id, "data": v}) }

	pub(1)
	d, r := bayeuxtest.Split(p.Connect(id, Msg{"ack": 0}))
	if len(d) != 1 || ackOf(t, r) != float64(1) {
		t.Fatalf("batch 1: %v %v", d, r)
	}
	// The reply carrying batch 1 is "lost": the client still acks 0.
	pub(2)
	d, r = bayeuxtest.Split(p.Connect(id, Msg{"ack": 0}))
	if len(d) != 2 || d[0]["data"] != float64(1) || d[1]["data"] != float64(2) || ackOf(t, r) != float64(2) {
		t.Fatalf("redelivery: %v %v", d, r)
	}
	// Acknowledged messages never come back.
	pub(3)
	d, _ = bayeuxtest.Split(p.Connect(id, Msg{"ack": 2}))
	if len(d) != 1 || d[0]["data"] != float64(3) {
		t.Fatalf("after ack 2: %v", d)
	}
}

func TestAckOffWithoutHandshakeExt(t *testing.T) {
	p := newPeer(t)
	id := p.Handshake(nil)
	p.MustSucceed(Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/n"})
	p.MustSucceed(Msg{"channel": "/n", "clientId": id, "data": 1})
	d, r := bayeuxtest.Split(p.Connect(id, Msg{"ack": 0}))
	if len(d) != 1 {
		t.Fatalf("deliveries %v", d)
	}
	if ext, ok := r[0]["ext"]; ok {
		t.Fatalf("ack ext on a session without ack: %v", ext)
	}
	// Delivered once and gone, even though the client "acked" 0.
	p.MustSucceed(Msg{"channel": "/n", "clientId": id, "data": 2})
	d, _ = bayeuxtest.Split(p.Connect(id, Msg{"ack": 0}))
	if len(d) != 1 || d[0]["data"] != float64(2) {
		t.Fatalf("second %v", d)
	}
}

func TestTimeSyncAnswers(t *testing.T) {
	p := newPeer(t)
	tc := time.Now().UnixMilli() - 1000
	r := p.Post(Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"},
		"ext": Msg{"timesync": Msg{"tc": tc, "l": 5, "o": 0}}})
	ext, _ := r[0]["ext"].(map[string]any)
	ts, _ := ext["timesync"].(map[string]any)
	if ts == nil || ts["tc"] != float64(tc) {
		t.Fatalf("timesync reply %v", r[0])
	}
	now := float64(time.Now().UnixMilli())
	if sv := ts["ts"].(float64); sv < now-5000 || sv > now+1000 {
		t.Fatalf("ts %v not near now %v", sv, now)
	}
	if a := ts["a"].(float64); a != float64(tc)+5-ts["ts"].(float64) {
		t.Fatalf("a = %v", a)
	}
	if p := ts["p"].(float64); p < 0 {
		t.Fatalf("p = %v", p)
	}
}
