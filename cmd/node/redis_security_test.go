package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testcert"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// clusterArgs runs a node in cluster mode on redisURL, on loopback.
func clusterArgs(redisURL string) []string {
	return []string{"--redis", redisURL, "--gossip-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--gossip-fast"}
}

// nodeMustFail runs a node that must exit with an error mentioning want,
// and returns its output.
func nodeMustFail(t *testing.T, env []string, want string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testproc.NodeBinary(t), append([]string{"--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(testproc.NodeEnviron(), env...)
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("node with %v did not fail (err %v):\n%s", args, err, out)
	}
	if !strings.Contains(string(out), want) {
		t.Fatalf("node with %v failed without %q:\n%s", args, want, out)
	}
	return string(out)
}

// publishThrough checks that a node works end to end through its Redis:
// subscribe, publish, receive.
func publishThrough(t *testing.T, n *testproc.Node) {
	t.Helper()
	p := &bayeuxtest.Peer{T: t, URL: n.URL}
	id := p.Handshake(nil)
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/redis/secure"})
	p.MustSucceed(bayeuxtest.Msg{"channel": "/redis/secure", "clientId": id, "data": "via redis"})
	if d, _ := bayeuxtest.Split(p.Connect(id, nil)); len(d) != 1 || d[0]["data"] != "via redis" {
		t.Fatalf("delivery through Redis: %v", d)
	}
}

// TestNodeRedisAuthAndTLS checks that Redis AUTH (an ACL user and the
// default user's password) and TLS are configured through the --redis URL
// alone, as go-redis's ParseURL reads it: redis://user:password@host:port
// and rediss:// (the CA from SSL_CERT_FILE), and that a wrong password, a
// missing one, plaintext to a TLS port and an untrusted server certificate
// all stop the node at start. The password never appears in its log.
func TestNodeRedisAuthAndTLS(t *testing.T) {
	const password = "s3cret-Pa55"
	t.Run("auth", func(t *testing.T) {
		r := testproc.StartRedisWith(t, testproc.FreePort(t),
			"--requirepass", "default-"+password,
			"--user", "bayeux", "on", ">"+password, "~*", "&*", "+@all")
		n := testproc.StartNode(t, nil, clusterArgs(fmt.Sprintf("redis://bayeux:%s@%s/0", password, r.Addr))...)
		publishThrough(t, n)
		n2 := testproc.StartNode(t, nil, clusterArgs(fmt.Sprintf("redis://:default-%s@%s", password, r.Addr))...)
		publishThrough(t, n2)
		for _, log := range []string{n.Log.String(), n2.Log.String()} {
			if strings.Contains(log, password) {
				t.Fatalf("password in the node log:\n%s", log)
			}
		}
		out := nodeMustFail(t, nil, "WRONGPASS", clusterArgs(fmt.Sprintf("redis://bayeux:wrong@%s", r.Addr))...)
		if strings.Contains(out, "bayeux:wrong") {
			t.Fatalf("password in the error:\n%s", out)
		}
		nodeMustFail(t, nil, "NOAUTH", clusterArgs("redis://"+r.Addr)...)
	})

	t.Run("tls", func(t *testing.T) {
		dir := t.TempDir()
		ca := testcert.NewCA(t, "test Redis CA")
		caFile := ca.WriteCA(t, dir, "ca.pem")
		certFile, keyFile := ca.Issue(t, "redis").Write(t, dir, "redis")
		port := testproc.FreePort(t)
		r := testproc.StartRedisWith(t, port, "--port", "0", "--tls-port", fmt.Sprint(port),
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no",
			"--requirepass", password)
		url := fmt.Sprintf("rediss://:%s@%s", password, r.Addr)
		n := testproc.StartNode(t, []string{"SSL_CERT_FILE=" + caFile}, clusterArgs(url)...)
		publishThrough(t, n)
		// Without the CA the server's certificate is not trusted.
		out := nodeMustFail(t, []string{"SSL_CERT_FILE=" + testcert.NewCA(t, "other").WriteCA(t, dir, "other.pem")}, "certificate", clusterArgs(url)...)
		t.Logf("untrusted Redis certificate: %s", strings.TrimSpace(out))
		// Plaintext to the TLS port does not get through.
		out = nodeMustFail(t, nil, "redis ping", clusterArgs(fmt.Sprintf("redis://:%s@%s", password, r.Addr))...)
		t.Logf("plaintext to the TLS port: %s", strings.TrimSpace(out))
	})
}
