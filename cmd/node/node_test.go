package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestNodeProcess runs the real binary: it prints its URL, serves health
// endpoints and Bayeux, and on SIGTERM answers a held connect with retry
// advice and exits cleanly.
func TestNodeProcess(t *testing.T) {
	n := testproc.StartNode(t, nil, "--timeout", "20s", "--shutdown-grace", "5s", "--debug-api")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(n.Base + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	p := &bayeuxtest.Peer{T: t, URL: n.URL}
	id := p.Handshake(nil)
	held := make(chan []bayeuxtest.Msg, 1)
	go func() { held <- p.Connect(id, nil) }()
	bayeuxtest.Eventually(t, 5*time.Second, func() error {
		resp, err := http.Get(n.Base + "/debug/bayeux/sessions/" + id)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), `"held":true`) {
			return fmt.Errorf("connect not held yet: %s", body)
		}
		return nil
	})
	if err := n.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-held:
		adv, _ := m[0]["advice"].(map[string]any)
		if m[0]["successful"] != true || adv["reconnect"] != "retry" {
			t.Fatalf("held connect at SIGTERM: %v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held connect not answered at SIGTERM")
	}
	err, exited := n.Wait(6 * time.Second)
	if !exited {
		t.Fatal("node did not exit within its grace period")
	}
	if err != nil {
		t.Fatalf("node exit: %v\n%s", err, n.Log.String())
	}
	if !strings.Contains(n.Log.String(), "stopped") {
		t.Fatalf("no clean stop in log:\n%s", n.Log.String())
	}
}

// TestNodeDemoFlag: the browser demo is served at / by default and not at
// all with --demo=false (the Bayeux endpoint is unaffected).
func TestNodeDemoFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, http.StatusOK},
		{[]string{"--demo=false"}, http.StatusNotFound},
	} {
		n := testproc.StartNode(t, nil, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.WaitReady(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		resp, err := http.Get(n.Base + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%v: GET / = %d, want %d", tc.args, resp.StatusCode, tc.want)
		}
		(&bayeuxtest.Peer{T: t, URL: n.URL}).Handshake(nil)
	}
}
