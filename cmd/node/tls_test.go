package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testcert"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// tlsClient trusts only pool; it is closed when the test ends.
func tlsClient(t *testing.T, cfg *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// waitReadyWith polls /readyz through client until it answers 200.
func waitReadyWith(t *testing.T, client *http.Client, base string) {
	t.Helper()
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
}

// TestNodeTLS serves Bayeux over HTTPS (long-polling, callback-polling and
// wss://) with a certificate generated for the test, and checks that the
// printed URL is https://, the browser cookie is Secure, and that neither
// plain HTTP nor a client not trusting the CA gets through.
func TestNodeTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "test HTTP CA")
	certFile, keyFile := ca.Issue(t, "node").Write(t, dir, "node")
	n := testproc.StartNode(t, nil, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--timeout", "2s")
	if !strings.HasPrefix(n.URL, "https://") {
		t.Fatalf("printed URL %q, want https://", n.URL)
	}
	client := tlsClient(t, &tls.Config{RootCAs: ca.Pool})
	waitReadyWith(t, client, n.Base)

	// Long-polling handshake over HTTPS (HTTP/2 when negotiated).
	hs := `[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]`
	resp, err := client.Post(n.URL, "application/json", strings.NewReader(hs))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.TLS == nil {
		t.Fatal("response not over TLS")
	}
	var r []map[string]any
	if err := json.Unmarshal(body, &r); err != nil || len(r) != 1 || r[0]["successful"] != true {
		t.Fatalf("handshake over https: %d %s (%v)", resp.StatusCode, body, err)
	}
	t.Logf("handshake over %s, TLS version %#x", resp.Proto, resp.TLS.Version)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "BAYEUX_BROWSER" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.Secure || !cookie.HttpOnly {
		t.Fatalf("BAYEUX_BROWSER cookie %v: want Secure and HttpOnly over TLS", cookie)
	}

	// The rest of a session: subscribe, publish, receive.
	p := &bayeuxtest.Peer{T: t, URL: n.URL, Client: client}
	id := p.Handshake(nil)
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/tls/news"})
	p.MustSucceed(bayeuxtest.Msg{"channel": "/tls/news", "clientId": id, "data": "over tls"})
	if d, _ := bayeuxtest.Split(p.Connect(id, nil)); len(d) != 1 || d[0]["data"] != "over tls" {
		t.Fatalf("delivery over https: %v", d)
	}

	// Callback-polling over HTTPS.
	resp, err = client.Get(n.URL + "?jsonp=cb&message=" + `%5B%7B%22channel%22%3A%22%2Fmeta%2Fhandshake%22%2C%22version%22%3A%221.0%22%2C%22supportedConnectionTypes%22%3A%5B%22callback-polling%22%5D%7D%5D`)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "/**/cb(") || !strings.Contains(string(body), `"successful":true`) {
		t.Fatalf("callback-polling handshake over https: %d %s", resp.StatusCode, body)
	}

	// WebSocket over wss://.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	defer wsClient.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(n.URL, "https"), &websocket.DialOptions{HTTPClient: wsClient})
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}]`)); err != nil {
		t.Fatal(err)
	}
	_, frame, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(frame), `"successful":true`) {
		t.Fatalf("wss handshake: %s %v", frame, err)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")

	// Plain HTTP to the TLS port is refused.
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Post("http"+strings.TrimPrefix(n.URL, "https"), "application/json", strings.NewReader(hs)); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "clientId") {
			t.Fatalf("plain HTTP to the TLS port: %d %s", resp.StatusCode, body)
		}
	}
	// A client that does not trust the CA fails the handshake.
	untrusting := tlsClient(t, &tls.Config{RootCAs: testcert.NewCA(t, "other CA").Pool})
	if _, err := untrusting.Post(n.URL, "application/json", strings.NewReader(hs)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client not trusting the CA: err %v, want a certificate error", err)
	}
}

// TestNodeBadSecurityFiles checks that a node refuses to start with
// unusable key material instead of silently serving without it.
func TestNodeBadSecurityFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "CA")
	certFile, keyFile := ca.Issue(t, "node").Write(t, dir, "node")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shortKey := filepath.Join(dir, "short.key")
	if err := os.WriteFile(shortKey, []byte("c2hvcnQ=\n"), 0o600); err != nil { // "short": 5 bytes
		t.Fatal(err)
	}
	cluster := []string{"--redis", "redis://127.0.0.1:1", "--gossip-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert-file", certFile}, "go together"},
		{"key is not PEM", []string{"--tls-cert-file", certFile, "--tls-key-file", junk}, "--tls-key-file"},
		{"cluster TLS without CA", append([]string{"--cluster-tls-cert", certFile, "--cluster-tls-key", keyFile}, cluster...), "go together"},
		{"cluster CA not PEM", append([]string{"--cluster-tls-cert", certFile, "--cluster-tls-key", keyFile, "--cluster-tls-ca", junk}, cluster...), "no PEM certificate"},
		{"cluster TLS on a single node", []string{"--cluster-tls-cert", certFile, "--cluster-tls-key", keyFile, "--cluster-tls-ca", caFile}, "cluster mode"},
		{"gossip key too short", append([]string{"--gossip-key-file", shortKey}, cluster...), "want 16, 24 or 32"},
		{"gossip key file missing", append([]string{"--gossip-key-file", junk + ".nope"}, cluster...), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, testproc.NodeBinary(t), append([]string{"--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = testproc.NodeEnviron()
			out, err := cmd.CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("node started (err %v):\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}
