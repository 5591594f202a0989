package cluster

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testcert"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// inprocNode is a broker with its own in-memory engine, clustered with
// Start and served over HTTP, until the test ends.
type inprocNode struct {
	b    *broker.Broker
	c    *Cluster
	url  string
	peer *bayeuxtest.Peer
}

// startInprocNode starts a node whose cluster config mutate adjusts; join
// is the gossip seed (empty for the first node).
func startInprocNode(t testing.TB, name, join string, mutate func(*Config)) *inprocNode {
	t.Helper()
	id := name + "-" + t.Name()
	b, err := broker.New(broker.Config{
		IDPrefix: NodeTag(id), Logger: quiet,
		Timeout: 500 * time.Millisecond, MaxInterval: 5 * time.Second, SweepInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeID: id, GossipListen: "127.0.0.1:0", GRPCListen: "127.0.0.1:0", FastGossip: true, Logger: quiet}
	if join != "" {
		cfg.Join = []string{join}
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, cfg, b)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer scancel()
		_ = b.Shutdown(sctx)
		client.CloseIdleConnections()
		srv.CloseClientConnections()
		srv.Close()
		c.Stop(sctx)
		cancel()
		<-done
	})
	return &inprocNode{b: b, c: c, url: srv.URL, peer: &bayeuxtest.Peer{T: t, URL: srv.URL, Client: client}}
}

// mtls returns a Config mutator installing mutual TLS with leaf and ca.
func mtls(leaf *testcert.Leaf, ca *testcert.CA) func(*Config) {
	return func(c *Config) {
		c.ServerTLS, c.ClientTLS = ServerTLS(leaf.TLS, ca.Pool), ClientTLS(leaf.TLS, ca.Pool, "")
	}
}

// process calls Node.Process on addr with creds and returns the error.
func process(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = clusterv1.NewNodeClient(conn).Process(ctx, &clusterv1.ProcessRequest{
		ProtocolVersion: ProtocolVersion, Transport: "long-polling",
		Parts: [][]byte{[]byte(`[{"channel":"/meta/connect","clientId":"x","connectionType":"long-polling"}]`)},
	})
	return err
}

// TestClusterMutualTLS runs two in-process nodes whose gRPC uses mutual TLS
// with certificates of one test CA: requests for a session owned by the
// other node are forwarded and served. A client presenting no certificate,
// a certificate of another CA, or no TLS at all is refused, and a node's
// client refuses a server whose certificate another CA signed.
func TestClusterMutualTLS(t *testing.T) {
	ca := testcert.NewCA(t, "cluster CA")
	a := startInprocNode(t, "a", "", mtls(ca.Issue(t, "a"), ca))
	b := startInprocNode(t, "b", a.c.GossipAddr(), mtls(ca.Issue(t, "b"), ca))
	waitFor(t, 10*time.Second, "two members", func() bool { return len(a.c.Members()) == 2 && len(b.c.Members()) == 2 })

	// A session handshaken on a, used only through b: every request is
	// forwarded over mutual TLS.
	id := a.peer.Handshake(nil)
	if !strings.HasPrefix(id, a.c.Tag()) {
		t.Fatalf("clientId %s lacks a's tag %s", id, a.c.Tag())
	}
	b.peer.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/mtls/news"})
	b.peer.MustSucceed(bayeuxtest.Msg{"channel": "/mtls/news", "clientId": id, "data": "forwarded"})
	if d, _ := bayeuxtest.Split(b.peer.Connect(id, nil)); len(d) != 1 || d[0]["data"] != "forwarded" {
		t.Fatalf("delivery through b: %v", d)
	}
	if _, ok := b.b.Session(id); ok {
		t.Fatal("the session moved to b: the requests were not forwarded")
	}

	other := testcert.NewCA(t, "other CA")
	intruder := other.Issue(t, "intruder")
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		want  string
	}{
		{"no client certificate", credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}), "certificate"},
		{"certificate of another CA", credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, ServerName: "localhost",
			// Sent even though the server asks for certificates of its CA.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &intruder.TLS, nil }}),
			"unknown certificate authority"},
		{"plaintext", insecure.NewCredentials(), "Unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := process(t, a.c.GRPCAddr(), tc.creds)
			if err == nil {
				t.Fatal("call accepted")
			}
			// The TLS alert races with the client's first write: the text
			// is "certificate required", "unknown certificate authority",
			// or a broken pipe. The call never reaches the service.
			t.Logf("refused: %v (typically %q)", err, tc.want)
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("error %v, want code Unavailable", err)
			}
		})
	}
	// The control: a node's own client credentials are accepted.
	if err := process(t, a.c.GRPCAddr(), credentials.NewTLS(ClientTLS(ca.Issue(t, "c").TLS, ca.Pool, ""))); err != nil {
		t.Fatalf("a member's certificate refused: %v", err)
	}

	// The client side verifies the server: a server with a certificate of
	// another CA (which would accept our client certificate) is refused.
	impostor := grpc.NewServer(grpc.Creds(credentials.NewTLS(ServerTLS(other.Issue(t, "impostor").TLS, ca.Pool))))
	clusterv1.RegisterNodeServer(impostor, &nodeServer{b: a.b})
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = impostor.Serve(ln) }()
	defer impostor.Stop()
	err = process(t, ln.Addr().String(), credentials.NewTLS(ClientTLS(ca.Issue(t, "d").TLS, ca.Pool, "")))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("impostor server: err %v, want a certificate error", err)
	}
	// With a server name, the name is verified too.
	named := ca.Issue(t, "named", "node.bayeux.internal")
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"node.bayeux.internal", true}, {"other.bayeux.internal", false}} {
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(ServerTLS(named.TLS, ca.Pool))))
		clusterv1.RegisterNodeServer(srv, &nodeServer{b: a.b})
		ln, err := netListen()
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		err = process(t, ln.Addr().String(), credentials.NewTLS(ClientTLS(named.TLS, ca.Pool, tc.name)))
		srv.Stop()
		if tc.ok && err != nil {
			t.Fatalf("server name %s: %v", tc.name, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "certificate")) {
			t.Fatalf("server name %s: err %v, want a certificate error", tc.name, err)
		}
	}
}

// TestClusterTLSMismatchUnavailable: a node whose client cannot
// authenticate to the owner answers the forwarded request with 503 and
// retry advice, never with data from an unauthenticated peer.
func TestClusterTLSMismatchUnavailable(t *testing.T) {
	ca, other := testcert.NewCA(t, "cluster CA"), testcert.NewCA(t, "other CA")
	a := startInprocNode(t, "a", "", mtls(ca.Issue(t, "a"), ca))
	b := startInprocNode(t, "b", a.c.GossipAddr(), mtls(other.Issue(t, "b"), other))
	waitFor(t, 10*time.Second, "two members", func() bool { return len(b.c.Members()) == 2 })
	id := a.peer.Handshake(nil)
	r := b.peer.Post(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/x"})
	adv, _ := r[0]["advice"].(map[string]any)
	if len(r) != 1 || r[0]["successful"] != false || !strings.HasPrefix(fmt.Sprint(r[0]["error"]), "503:") || adv["reconnect"] != "retry" {
		t.Fatalf("forward with a foreign certificate: %v", r)
	}
}

// TestGossipEncryption: members sharing a key form a cluster; one with
// another key (or none) cannot join it, and a keyring holding the old key
// after the new one still talks to both (rotation).
func TestGossipEncryption(t *testing.T) {
	key := func(b byte, n int) []byte {
		k := make([]byte, n)
		for i := range k {
			k[i] = b + byte(i)
		}
		return k
	}
	k1, k2 := key(1, 32), key(100, 16)
	var ms []*Membership
	t.Cleanup(func() {
		for _, m := range ms {
			_ = m.Leave(100 * time.Millisecond)
		}
	})
	start := func(name string, keys [][]byte) *Membership {
		t.Helper()
		id := name + "-" + t.Name()
		cfg := MembershipConfig{Self: Meta{ID: id, Tag: NodeTag(id), GRPC: "127.0.0.1:1", Proto: ProtocolVersion},
			Listen: "127.0.0.1:0", Fast: true, Logger: quiet, Keys: keys}
		m, err := NewMembership(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
		return m
	}
	a := start("a", [][]byte{k1})
	b := start("b", [][]byte{k1})
	if n, err := b.ml.Join([]string{a.Addr()}); n != 1 || err != nil {
		t.Fatalf("join with the same key: contacted %d (err %v)", n, err)
	}
	waitFor(t, 10*time.Second, "a and b to see each other", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })

	for _, tc := range []struct {
		name string
		keys [][]byte
	}{{"wrong key", [][]byte{k2}}, {"no key", nil}} {
		intruder := start(tc.name, tc.keys)
		n, err := intruder.ml.Join([]string{a.Addr()})
		if n != 0 || err == nil {
			t.Fatalf("%s: joined %d members (err %v)", tc.name, n, err)
		}
		t.Logf("%s: join refused: %v", tc.name, err)
		// Nor does a learn of it.
		if _, ok := a.Alive(intruder.cfg.Self.Tag); ok {
			t.Fatalf("%s: a lists the intruder", tc.name)
		}
	}
	// Rotation, first step: a member with [k1, k2] (encrypting with k1,
	// also reading k2) joins the k1 members; second step: a member with
	// [k2, k1] joins it.
	c := start("c", [][]byte{k1, k2})
	if n, err := c.ml.Join([]string{a.Addr()}); n != 1 || err != nil {
		t.Fatalf("member with [old, new]: contacted %d (err %v)", n, err)
	}
	waitFor(t, 10*time.Second, "three members", func() bool { return len(a.Members()) == 3 && len(c.Members()) == 3 })
	d := start("d", [][]byte{k2, k1})
	if n, err := d.ml.Join([]string{c.Addr()}); n != 1 || err != nil {
		t.Fatalf("member with [new, old] joining one with [old, new]: contacted %d (err %v)", n, err)
	}
}

func TestParseGossipKeys(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{b64(16), 1, ""},
		{b64(32) + "\n" + b64(24) + "\n", 2, ""},
		{b64(32) + "," + b64(16), 2, ""},
		{"", 0, "no key"},
		{" \n", 0, "no key"},
		{b64(15), 0, "want 16, 24 or 32"},
		{b64(33), 0, "want 16, 24 or 32"},
		{"not*base64", 0, "not base64"},
	} {
		keys, err := ParseGossipKeys(tc.in)
		if tc.want != "" {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.want)
			}
			continue
		}
		if err != nil || len(keys) != tc.n {
			t.Errorf("%q: %d keys, err %v; want %d", tc.in, len(keys), err, tc.n)
		}
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "CA")
	cert, key := ca.Issue(t, "n").Write(t, dir, "n")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadTLS(TLSFiles{Cert: cert, Key: key, CA: caFile}); err != nil {
		t.Fatalf("valid files: %v", err)
	}
	for _, tc := range []struct {
		f    TLSFiles
		want string
	}{
		{TLSFiles{Cert: cert, Key: key}, "all three"},
		{TLSFiles{Cert: cert, Key: junk, CA: caFile}, "certificate"},
		{TLSFiles{Cert: cert, Key: key, CA: junk}, "no PEM certificate"},
		{TLSFiles{Cert: cert, Key: key, CA: junk + ".nope"}, "no such file"},
	} {
		if _, _, err := LoadTLS(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.f, err, tc.want)
		}
	}
}

// TestParseClientID: the shape check that keeps forged clientIds away
// from Redis and from forwarding.
func TestParseClientID(t *testing.T) {
	good := NodeTag("n") + strings.Repeat("a", broker.ClientIDRandomLen)
	if tag, ok := ParseClientID(good); !ok || tag != NodeTag("n") {
		t.Fatalf("ParseClientID(%q) = %q, %v", good, tag, ok)
	}
	for _, bad := range []string{"", "x", good[:len(good)-1], good + "a", "ABCDEF" + good[6:], good[:6] + strings.Repeat("1", 26),
		good[:10] + "{" + good[11:], good[:10] + "\x00" + good[11:]} {
		if _, ok := ParseClientID(bad); ok {
			t.Errorf("ParseClientID(%q) accepted", bad)
		}
	}
}

// TestForgedClientIDNotForwarded: a clientId whose first characters name a
// live node but which that node cannot have issued gets 402 at once,
// without a forward.
func TestForgedClientIDNotForwarded(t *testing.T) {
	a := startInprocNode(t, "a", "", nil)
	fw := &forwardCounter{}
	b := startInprocNode(t, "b", a.c.GossipAddr(), func(c *Config) { c.Observer = fw })
	waitFor(t, 10*time.Second, "two members", func() bool { return len(b.c.Members()) == 2 })
	forged := a.c.Tag() + "-not-a-session-id"
	r := b.peer.Post(bayeuxtest.Msg{"channel": "/meta/connect", "clientId": forged, "connectionType": "long-polling"})
	if len(r) != 1 || !strings.HasPrefix(fmt.Sprint(r[0]["error"]), "402:") {
		t.Fatalf("forged clientId: %v", r)
	}
	if n := fw.n.Load(); n != 0 {
		t.Fatalf("forged clientId forwarded (%d forwards)", n)
	}
	// A well-formed id of a's is forwarded (and unknown there: 402 too).
	wellFormed := a.c.Tag() + strings.Repeat("q", broker.ClientIDRandomLen)
	r = b.peer.Post(bayeuxtest.Msg{"channel": "/meta/connect", "clientId": wellFormed, "connectionType": "long-polling"})
	if len(r) != 1 || !strings.HasPrefix(fmt.Sprint(r[0]["error"]), "402:") {
		t.Fatalf("well-formed unknown clientId: %v", r)
	}
	if n := fw.n.Load(); n != 1 {
		t.Fatalf("well-formed clientId: %d forwards, want 1", n)
	}
}

// forwardCounter is an Observer counting forwards.
type forwardCounter struct{ n atomic.Int64 }

func (f *forwardCounter) RedisCommand(string, time.Duration, error) {}
func (f *forwardCounter) Forward(string)                            { f.n.Add(1) }
func (f *forwardCounter) Members(int)                               {}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
