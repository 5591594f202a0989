package broker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawPoll sends one long-polling POST on an open connection.
func rawPoll(t *testing.T, c net.Conn, host string, m msg) {
	t.Helper()
	body, _ := json.Marshal([]msg{m})
	req := fmt.Sprintf("POST /cometd HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, len(body), body)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
}

// rawReply reads one HTTP response from br and decodes its JSON body.
func rawReply(t *testing.T, c net.Conn, br *bufio.Reader) (*http.Response, []msg) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []msg
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp, out
}

// wantParked waits until n long-polls are parked (taken out of net/http,
// parkAfter after they arrived), where parking is possible.
func (tb *testBroker) wantParked(t *testing.T, n int) {
	t.Helper()
	if !tb.poller.Available() {
		return
	}
	eventually(t, 2*time.Second, func() error {
		got := len(tb.conns.parkedPolls())
		if got != n {
			return fmt.Errorf("%d long-polls parked, want %d", got, n)
		}
		return nil
	})
}

// A parked long-poll is answered on its own connection, which then serves
// the next requests (keep-alive across the hand-back), and ends when the
// client closes it.
func TestParkedLongPollKeepAlive(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	tb.subscribe(t, id, "/park")
	host := strings.TrimPrefix(tb.srv.URL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for round := range 3 {
		rawPoll(t, c, host, msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"})
		tb.waitHeld(t, id)
		tb.wantParked(t, 1)
		other := tb.handshake(t, nil)
		tb.publish(t, other, "/park", round)
		resp, out := rawReply(t, c, br)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json;charset=UTF-8" || resp.Header.Get("Cache-Control") == "" {
			t.Fatalf("round %d: status %d header %v", round, resp.StatusCode, resp.Header)
		}
		d, r := split(out)
		if len(d) != 1 || d[0]["data"] != float64(round) || len(r) != 1 || r[0]["successful"] != true {
			t.Fatalf("round %d: %v", round, out)
		}
	}
	// A plain request on the same connection after the hand-back.
	rawPoll(t, c, host, msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/park2"})
	if _, out := rawReply(t, c, br); len(out) != 1 || out[0]["successful"] != true {
		t.Fatalf("subscribe after hand-back: %v", out)
	}
}

// A client that goes away while its connect is parked loses nothing: the
// connect ends without a reply and queued messages wait for the next one.
func TestParkedLongPollClientGone(t *testing.T) {
	tb := newTestBroker(t, nil)
	id := tb.handshake(t, nil)
	tb.subscribe(t, id, "/gone")
	host := strings.TrimPrefix(tb.srv.URL, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	rawPoll(t, c, host, msg{"channel": "/meta/connect", "clientId": id, "connectionType": "long-polling"})
	tb.waitHeld(t, id)
	tb.wantParked(t, 1)
	_ = c.Close()
	eventually(t, 2*time.Second, func() error {
		if s, ok := tb.Session(id); ok && s.hasWaiter() {
			return fmt.Errorf("connect still held after the client left")
		}
		return nil
	})
	other := tb.handshake(t, nil)
	tb.publish(t, other, "/gone", "kept")
	d, _ := split(tb.connect(t, id, nil))
	if len(d) != 1 || d[0]["data"] != "kept" {
		t.Fatalf("queued message: %v", d)
	}
}
