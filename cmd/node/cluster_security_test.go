package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testcert"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

// TestNodeClusterSecurityFlags runs node processes with --cluster-tls-*
// and --gossip-key-file: two nodes with certificates of one CA and one
// gossip key form a cluster and forward requests to each other over mutual
// TLS; a node with another gossip key cannot join them.
func TestNodeClusterSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "cluster CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	writeKey := func(name string, b byte) string {
		k := make([]byte, 32)
		for i := range k {
			k[i] = b ^ byte(i*7)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, otherKey := writeKey("gossip.key", 1), writeKey("other-gossip.key", 2)
	secure := func(name, gossipKey string) []string {
		cert, k := ca.Issue(t, name).Write(t, dir, name)
		return []string{"--cluster-tls-cert", cert, "--cluster-tls-key", k, "--cluster-tls-ca", caFile, "--gossip-key-file", gossipKey}
	}
	c := &testproc.Cluster{Redis: testproc.StartRedis(t), Path: "/cometd"}
	for _, name := range []string{"n0", "n1"} {
		c.Nodes = append(c.Nodes, c.StartNode(t, secure(name, key)...))
	}
	c.WaitMembers(t, 2, 10*time.Second)

	// A session of n0 used through n1 only: forwarded over mutual TLS.
	p0, p1 := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}, &bayeuxtest.Peer{T: t, URL: c.Nodes[1].URL}
	id := p0.Handshake(nil)
	if !strings.HasPrefix(id, c.Nodes[0].Tag) {
		t.Fatalf("clientId %s, want n0's tag %s", id, c.Nodes[0].Tag)
	}
	p1.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/secure/news"})
	p1.MustSucceed(bayeuxtest.Msg{"channel": "/secure/news", "clientId": id, "data": "over mtls"})
	if d, _ := bayeuxtest.Split(p1.Connect(id, nil)); len(d) != 1 || d[0]["data"] != "over mtls" {
		t.Fatalf("delivery through n1: %v", d)
	}

	// The gRPC port takes no caller without a certificate of the CA.
	for name, creds := range map[string]credentials.TransportCredentials{
		"plaintext":          insecure.NewCredentials(),
		"no certificate":     credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}),
		"member certificate": credentials.NewTLS(cluster.ClientTLS(ca.Issue(t, "probe").TLS, ca.Pool, "")),
	} {
		conn, err := grpc.NewClient(c.Nodes[0].GRPC, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		conn.Close()
		if (err == nil) != (name == "member certificate") {
			t.Fatalf("gRPC health check with %s: err %v", name, err)
		}
	}

	// A node with another gossip key keeps failing to join.
	intruder := c.StartNode(t, append(secure("intruder", otherKey), "--log-level", "debug")...)
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		if log := intruder.Log.String(); !strings.Contains(log, "no installed keys could decrypt the message") {
			return errors.New("intruder not refused yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, n := range append(c.Nodes, intruder) {
		want := 2
		if n == intruder {
			want = 1
		}
		if got, err := n.Members(ctx); err != nil || got != want {
			t.Fatalf("node %d reports %d members (err %v), want %d", i, got, err, want)
		}
	}
}
