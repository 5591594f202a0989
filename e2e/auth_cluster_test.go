package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// authACL lets members read and write /chat/** except /chat/admin/**
// (admins only), and anyone anything else, /meta/** aside.
const authACL = `{"rules":[
  {"pattern":"/chat/admin/**","subscribe":["role:admin"],"publish":["role:admin"]},
  {"pattern":"/chat/**","subscribe":["role:member"],"publish":["role:member"]},
  {"pattern":"/**","subscribe":["*"],"publish":["*"]}
]}`

// TestClusterAuth runs three nodes with JWT authentication and a channel
// ACL behind the round-robin balancer and checks that every node makes the
// same decisions: a valid token handshakes on any node and its session is
// honoured on the others; an invalid one gets 403 with reconnect none
// everywhere; a denied subscribe or publish is denied identically whichever
// node serves it; /meta/** is never publishable.
func TestClusterAuth(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("e2e-cluster-secret-0123456789abcdef")
	secretFile, aclFile := filepath.Join(dir, "jwt.secret"), filepath.Join(dir, "acl.json")
	for f, b := range map[string][]byte{secretFile: secret, aclFile: []byte(authACL)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := testproc.StartCluster(t, 3, "--auth-jwt-hmac-secret-file", secretFile, "--acl-file", aclFile, "--timeout", "2s")
	token := func(key []byte, sub string, exp time.Duration, roles ...string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "roles": roles, "exp": time.Now().Add(exp).Unix()}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	balancer := &bayeuxtest.Peer{T: t, URL: c.URL()}
	direct := make([]*bayeuxtest.Peer, len(c.Nodes))
	tagNode := map[string]int{}
	for i, n := range c.Nodes {
		direct[i] = &bayeuxtest.Peer{T: t, URL: n.URL}
		tagNode[n.Tag] = i
	}
	// Every check goes to each node directly and then three times through
	// the balancer (round robin: one request per node).
	everywhere := func(f func(via string, p *bayeuxtest.Peer)) {
		for i, p := range direct {
			f(fmt.Sprintf("node %d", i), p)
		}
		for i := 0; i < len(c.Nodes); i++ {
			f(fmt.Sprintf("balancer #%d", i), balancer)
		}
	}
	handshake := func(ext bayeuxtest.Msg) bayeuxtest.Msg {
		return bayeuxtest.Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}, "ext": ext}
	}
	expect := func(via string, p *bayeuxtest.Peer, m bayeuxtest.Msg, wantErr, wantReconnect string) {
		t.Helper()
		r := p.Post(m)
		if len(r) != 1 || r[0]["successful"] != false || r[0]["error"] != wantErr {
			t.Fatalf("via %s: %v got %v, want error %q", via, m, r, wantErr)
		}
		if wantReconnect != "" {
			adv, _ := r[0]["advice"].(map[string]any)
			if adv["reconnect"] != wantReconnect {
				t.Fatalf("via %s: advice %v, want reconnect %q", via, r[0]["advice"], wantReconnect)
			}
		}
	}

	t.Run("valid token handshakes on every node", func(t *testing.T) {
		tags := map[string]map[string]bool{} // via direct or balancer: node tags that accepted
		everywhere(func(via string, p *bayeuxtest.Peer) {
			id := p.Handshake(bayeuxtest.Msg{"authToken": token(secret, "alice", time.Hour, "member")})
			kind := strings.Fields(via)[0]
			if tags[kind] == nil {
				tags[kind] = map[string]bool{}
			}
			tags[kind][id[:6]] = true
		})
		for kind, seen := range tags {
			if len(seen) != len(c.Nodes) {
				t.Fatalf("through %s: sessions on %d nodes (%v), want %d", kind, len(seen), seen, len(c.Nodes))
			}
		}
	})

	t.Run("invalid token refused on every node", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ext  bayeuxtest.Msg
			want string
		}{
			{"no token", nil, "403::Authentication required"},
			{"wrong key", bayeuxtest.Msg{"authToken": token([]byte("another-secret-0123456789abcdefgh"), "mallory", time.Hour, "admin")}, "403::Invalid token"},
			{"expired", bayeuxtest.Msg{"authToken": token(secret, "alice", -time.Hour, "member")}, "403::Token expired"},
			{"garbage", bayeuxtest.Msg{"authToken": "not.a.jwt"}, "403::Invalid token"},
		} {
			everywhere(func(via string, p *bayeuxtest.Peer) { expect(via+" "+tc.name, p, handshake(tc.ext), tc.want, "none") })
		}
	})

	// Sessions of each user, one per node.
	alice := direct[0].Handshake(bayeuxtest.Msg{"authToken": token(secret, "alice", time.Hour, "member")})
	bob := direct[1].Handshake(bayeuxtest.Msg{"authToken": token(secret, "bob", time.Hour)})
	root := direct[2].Handshake(bayeuxtest.Msg{"authToken": token(secret, "root", time.Hour, "admin", "member")})
	for name, id := range map[string]string{"alice": alice, "bob": bob, "root": root} {
		if _, ok := tagNode[id[:6]]; !ok {
			t.Fatalf("%s's clientId %s has no node's tag", name, id)
		}
	}
	sub := func(id, ch string) bayeuxtest.Msg {
		return bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch}
	}
	pub := func(id, ch string) bayeuxtest.Msg {
		return bayeuxtest.Msg{"channel": ch, "clientId": id, "data": "x"}
	}

	t.Run("denials identical on every node", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			m    bayeuxtest.Msg
			want string
		}{
			{"bob subscribe", sub(bob, "/chat/room"), "403:/chat/room:Subscription denied"},
			{"bob wildcard", sub(bob, "/chat/*"), "403:/chat/*:Subscription denied"},
			{"alice admin", sub(alice, "/chat/admin/x"), "403:/chat/admin/x:Subscription denied"},
			{"alice wildcard reaching admin", sub(alice, "/chat/**"), "403:/chat/**:Subscription denied"},
			{"bob publish", pub(bob, "/chat/room"), "403:/chat/room:Publish denied"},
			{"alice publish admin", pub(alice, "/chat/admin/x"), "403:/chat/admin/x:Publish denied"},
		} {
			everywhere(func(via string, p *bayeuxtest.Peer) { expect(via+" "+tc.name, p, tc.m, tc.want, "") })
		}
	})

	t.Run("meta never publishable", func(t *testing.T) {
		for _, ch := range []string{"/meta/custom", "/meta/subscribe/x", "/meta/Connect", "/meta/a/b/c"} {
			everywhere(func(via string, p *bayeuxtest.Peer) {
				r := p.Post(pub(root, ch))
				if len(r) != 1 || r[0]["successful"] != false || !strings.HasPrefix(fmt.Sprint(r[0]["error"]), "405:"+ch+":") {
					t.Fatalf("via %s: publish to %s by root got %v, want 405", via, ch, r)
				}
			})
		}
	})

	t.Run("grants honoured on every node", func(t *testing.T) {
		// alice (owned by node 0) subscribes through node 1, root (node 2)
		// publishes through node 0 and the balancer, alice receives
		// through node 2.
		direct[1].MustSucceed(sub(alice, "/chat/*"))
		direct[0].MustSucceed(pub(root, "/chat/room"))
		balancer.MustSucceed(pub(root, "/chat/admin/x")) // not matched by /chat/*
		balancer.MustSucceed(pub(alice, "/chat/room"))
		var got []string
		bayeuxtest.Eventually(t, 10*time.Second, func() error {
			d, _ := bayeuxtest.Split(direct[2].Connect(alice, nil))
			for _, m := range d {
				got = append(got, fmt.Sprint(m["channel"]))
			}
			if len(got) < 2 {
				return fmt.Errorf("alice received %v", got)
			}
			return nil
		})
		if len(got) != 2 || got[0] != "/chat/room" || got[1] != "/chat/room" {
			t.Fatalf("alice received %v, want /chat/room twice", got)
		}
		everywhere(func(via string, p *bayeuxtest.Peer) { p.MustSucceed(pub(bob, "/elsewhere")) })
	})
}
