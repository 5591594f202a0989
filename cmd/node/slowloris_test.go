package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testcert"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// slowConn is one slowloris connection: it dribbles a request one byte at
// a time and records when the server closed it.
type slowConn struct {
	start  time.Time
	closed chan time.Time // receives when the server closed the connection
}

// dribble opens a connection to addr, writes prefix at once, then slow
// one byte every gap, then bytes of filler (cyclically) at the same pace,
// until the server closes the connection or stop closes. A reader
// goroutine records the close.
func dribble(addr, prefix, slow, filler string, gap time.Duration, stop <-chan struct{}, wg *sync.WaitGroup) (*slowConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	sc := &slowConn{start: time.Now(), closed: make(chan time.Time, 1)}
	if _, err := c.Write([]byte(prefix)); err != nil {
		c.Close()
		return nil, err
	}
	wg.Add(2)
	go func() { // reader: the server's close (EOF or reset), after any response
		defer wg.Done()
		_, _ = io.Copy(io.Discard, c)
		sc.closed <- time.Now()
	}()
	go func() { // writer
		defer wg.Done()
		defer c.Close()
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for i := 0; ; i++ {
			var b byte
			if i < len(slow) {
				b = slow[i]
			} else {
				b = filler[(i-len(slow))%len(filler)]
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return // closed by the server
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return sc, nil
}

// TestNodeSlowloris opens 200 connections that send their headers (then,
// for some, their body) one byte at a time, and checks that a well-behaved
// client meanwhile handshakes, subscribes, publishes and receives promptly,
// and that the node drops every slow connection once --read-header-timeout
// (or --read-timeout, for a slow body) has passed.
func TestNodeSlowloris(t *testing.T) {
	const (
		slowHeaders  = 150
		slowBodies   = 50
		headerLimit  = 2 * time.Second
		requestLimit = 3 * time.Second
		gap          = 100 * time.Millisecond
	)
	n := testproc.StartNode(t, nil, "--read-header-timeout", headerLimit.String(), "--read-timeout", requestLimit.String(),
		"--timeout", "5s", "--max-sessions-per-browser", "-1")
	addr := strings.TrimPrefix(n.Base, "http://")

	// The well-behaved client, set up before the attack.
	good := &bayeuxtest.Peer{T: t, URL: n.URL}
	sub := good.Handshake(nil)
	good.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": sub, "subscription": "/good/news"})

	// One round of the good client: a fresh handshake, a publish, its
	// delivery to the subscriber, a disconnect.
	round := func(i int) time.Duration {
		start := time.Now()
		pub := good.Handshake(nil)
		good.MustSucceed(bayeuxtest.Msg{"channel": "/good/news", "clientId": pub, "data": i})
		d, _ := bayeuxtest.Split(good.Connect(sub, nil))
		if len(d) != 1 || d[0]["data"] != float64(i) {
			t.Fatalf("round %d: delivery %v", i, d)
		}
		good.MustSucceed(bayeuxtest.Msg{"channel": "/meta/disconnect", "clientId": pub})
		return time.Since(start)
	}
	var unloaded time.Duration
	for i := 0; i < 5; i++ {
		unloaded = max(unloaded, round(i))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	var conns []*slowConn
	headerReq := "POST /cometd HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/json\r\nX-Slow: "
	body := `[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]`
	bodyReq := fmt.Sprintf("POST /cometd HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", addr, len(body)+1000)
	for i := 0; i < slowHeaders+slowBodies; i++ {
		var sc *slowConn
		var err error
		if i < slowHeaders { // headers byte by byte, never ending
			sc, err = dribble(addr, "", headerReq, "abcdefghijklmnopqrstuvwxyz", gap, stop, &wg)
		} else { // headers at once, then a body byte by byte
			sc, err = dribble(addr, bodyReq, "", body, gap, stop, &wg)
		}
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, sc)
	}
	attackStart := conns[0].start
	t.Logf("%d slow connections open in %v", len(conns), time.Since(attackStart).Round(time.Millisecond))

	// While they dribble, the good client works promptly.
	var worst time.Duration
	for i := 0; i < 5; i++ {
		worst = max(worst, round(100+i))
	}
	during := time.Since(attackStart)
	t.Logf("good client rounds (handshake, publish, receive, disconnect): slowest of 5 %v before the attack, %v during it",
		unloaded.Round(time.Microsecond), worst.Round(time.Microsecond))
	if worst > time.Second {
		t.Errorf("a round took %v during the attack, want under 1s", worst)
	}
	for i, sc := range conns {
		select {
		case at := <-sc.closed:
			t.Fatalf("slow connection %d closed after %v, before the good client's rounds ended (%v into the attack)", i, at.Sub(sc.start), during)
		default:
		}
	}

	// Every slow connection is dropped after its deadline, not before the
	// header timeout and well before the attacker would give up.
	deadline := time.After(headerLimit + requestLimit + 5*time.Second)
	var longestHeader, longestBody time.Duration
	for i, sc := range conns {
		select {
		case at := <-sc.closed:
			life := at.Sub(sc.start)
			limit := headerLimit
			if i < slowHeaders {
				longestHeader = max(longestHeader, life)
			} else {
				longestBody, limit = max(longestBody, life), requestLimit
			}
			if life < limit-200*time.Millisecond || life > limit+2*time.Second {
				t.Errorf("slow connection %d closed after %v, want about %v", i, life, limit)
			}
		case <-deadline:
			t.Fatalf("slow connection %d (of %d) still open %v after it started", i, len(conns), time.Since(sc.start))
		}
	}
	t.Logf("all %d slow connections dropped: slow headers after at most %v (--read-header-timeout %v), slow bodies after at most %v (--read-timeout %v)",
		len(conns), longestHeader.Round(time.Millisecond), headerLimit, longestBody.Round(time.Millisecond), requestLimit)
}

// TestNodeReadTimeoutSparesHeldConnects: --read-timeout bounds reading a
// request, not the connect held after it, nor a websocket, over HTTP/1.1
// and over HTTPS (HTTP/2).
func TestNodeReadTimeoutSparesHeldConnects(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "CA")
	certFile, keyFile := ca.Issue(t, "node").Write(t, dir, "node")
	common := []string{"--read-timeout", "500ms", "--read-header-timeout", "500ms", "--timeout", "2s"}
	for _, tc := range []struct {
		name   string
		args   []string
		client *http.Client
	}{
		{"http", nil, &http.Client{Transport: &http.Transport{}}},
		{"https", []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile}, tlsClient(t, &tls.Config{RootCAs: ca.Pool})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testproc.StartNode(t, nil, append(common, tc.args...)...)
			p := &bayeuxtest.Peer{T: t, URL: n.URL, Client: tc.client}
			id := p.Handshake(nil)
			start := time.Now()
			r := p.Connect(id, nil) // held for --timeout
			if held := time.Since(start); len(r) != 1 || r[0]["successful"] != true || held < 1500*time.Millisecond {
				t.Fatalf("connect held %v, answered %v: want a normal answer after the 2s timeout", held, r)
			}
		})
	}
}
