package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// e2eACL lets members read and write /chat/** except /chat/admin/**, and
// would let anyone publish anywhere else (to prove /meta/ stays closed).
const e2eACL = `{"rules":[
  {"pattern":"/chat/admin/**","subscribe":["role:admin"],"publish":["role:admin"]},
  {"pattern":"/chat/**","subscribe":["role:member"],"publish":["role:member"]},
  {"pattern":"/**","subscribe":["*"],"publish":["*"]}
]}`

type node struct {
	b    *broker.Broker
	pol  *Policy
	peer *bayeuxtest.Peer
}

// startNode serves a broker with pol installed the way cmd/node does.
func startNode(t *testing.T, pol *Policy) *node {
	t.Helper()
	b, err := broker.New(broker.Config{
		Timeout: 300 * time.Millisecond, MaxInterval: 2 * time.Second, SweepInterval: 50 * time.Millisecond,
		Policy: pol, Extensions: []broker.Extension{pol.Extension()},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = b.Run(ctx); close(done) }()
	srv := httptest.NewServer(b)
	client := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.Shutdown(sctx)
		scancel()
		client.CloseIdleConnections()
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
		pol.Close()
	})
	return &node{b: b, pol: pol, peer: &bayeuxtest.Peer{T: t, URL: srv.URL, Client: client}}
}

func handshakeMsg(ext bayeuxtest.Msg) bayeuxtest.Msg {
	m := bayeuxtest.Msg{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": []string{"long-polling"}}
	if ext != nil {
		m["ext"] = ext
	}
	return m
}

// expectFail posts m and checks the single reply fails with want.
func expectFail(t *testing.T, p *bayeuxtest.Peer, m bayeuxtest.Msg, want string) bayeuxtest.Msg {
	t.Helper()
	r := p.Post(m)
	if len(r) != 1 || r[0]["successful"] != false || r[0]["error"] != want {
		t.Fatalf("%v: got %v, want error %q", m, r, want)
	}
	return r[0]
}

func TestEndToEndJWT(t *testing.T) {
	now := time.Now()
	tok := func(sub string, roles ...string) string {
		return sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": sub, "roles": roles, "exp": now.Add(time.Hour).Unix()})
	}
	j, err := NewJWT(JWTConfig{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	acl, err := ParseACL([]byte(e2eACL))
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, NewPolicy(j, acl))
	p := n.peer

	t.Run("handshake denied", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ext  bayeuxtest.Msg
			want string
		}{
			{"no token", nil, "403::Authentication required"},
			{"bad signature", bayeuxtest.Msg{"authToken": sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 32)), jwt.MapClaims{"sub": "x", "exp": now.Add(time.Hour).Unix()})}, "403::Invalid token"},
			{"expired", bayeuxtest.Msg{"authToken": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "x", "exp": now.Add(-time.Hour).Unix()})}, "403::Token expired"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := expectFail(t, p, handshakeMsg(tc.ext), tc.want)
				adv, _ := r["advice"].(map[string]any)
				if adv["reconnect"] != "none" {
					t.Fatalf("advice %v, want reconnect none", r["advice"])
				}
				if _, ok := r["clientId"]; ok {
					t.Fatalf("denied handshake got a clientId: %v", r)
				}
			})
		}
		if s := n.b.Stats().Sessions; s != 0 {
			t.Fatalf("%d sessions after denied handshakes", s)
		}
	})

	alice := p.Handshake(bayeuxtest.Msg{"authToken": tok("alice", "member")})
	bob := p.Handshake(bayeuxtest.Msg{"authToken": tok("bob")})
	root := p.Handshake(bayeuxtest.Msg{"authToken": tok("root", "admin", "member")})
	if n.pol.pendingCount() != 0 {
		t.Fatalf("%d identities left pending", n.pol.pendingCount())
	}
	for id, user := range map[string]string{alice: "alice", bob: "bob", root: "root"} {
		s, ok := n.b.Session(id)
		if !ok || IdentityOf(s) == nil || IdentityOf(s).User != user {
			t.Fatalf("session %s: identity %+v, want user %s", id, IdentityOf(s), user)
		}
		// What an adopting node restores the identity from.
		var durable Identity
		if raw, ok := s.Durable(durableIdentity); !ok || json.Unmarshal(raw, &durable) != nil || durable.User != user || !slices.Equal(durable.Roles, IdentityOf(s).Roles) {
			t.Fatalf("session %s: durable identity %s, want user %s", id, raw, user)
		}
	}

	sub := func(id, ch string) bayeuxtest.Msg {
		return bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch}
	}
	pub := func(id, ch string) bayeuxtest.Msg {
		return bayeuxtest.Msg{"channel": ch, "clientId": id, "data": map[string]any{"from": id}}
	}
	t.Run("denied", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			m    bayeuxtest.Msg
			want string
		}{
			{"no grant subscribe", sub(bob, "/chat/room"), "403:/chat/room:Subscription denied"},
			{"no grant wildcard", sub(bob, "/chat/*"), "403:/chat/*:Subscription denied"},
			{"member on admin", sub(alice, "/chat/admin/x"), "403:/chat/admin/x:Subscription denied"},
			{"member wildcard reaching admin", sub(alice, "/chat/**"), "403:/chat/**:Subscription denied"},
			{"no grant publish", pub(bob, "/chat/room"), "403:/chat/room:Publish denied"},
			{"member publish admin", pub(alice, "/chat/admin/x"), "403:/chat/admin/x:Publish denied"},
			{"publish meta", pub(root, "/meta/custom"), "405:/meta/custom:Unknown meta channel or publish to a meta channel"},
			{"subscribe meta", sub(root, "/meta/**"), "405:/meta/**:Cannot subscribe to a meta channel"},
		} {
			t.Run(tc.name, func(t *testing.T) { expectFail(t, p, tc.m, tc.want) })
		}
	})

	t.Run("allowed", func(t *testing.T) {
		p.MustSucceed(sub(alice, "/chat/*"))
		p.MustSucceed(sub(root, "/chat/**"))
		p.MustSucceed(sub(bob, "/elsewhere"))
		p.MustSucceed(pub(alice, "/chat/room"))
		p.MustSucceed(pub(root, "/chat/admin/x"))
		p.MustSucceed(pub(bob, "/elsewhere"))
		got := func(id string) map[string]bool {
			chans := map[string]bool{}
			bayeuxtest.Eventually(t, 3*time.Second, func() error {
				d, _ := bayeuxtest.Split(p.Connect(id, nil))
				for _, m := range d {
					chans[m["channel"].(string)] = true
				}
				if len(chans) == 0 {
					return os.ErrNotExist
				}
				return nil
			})
			return chans
		}
		if c := got(alice); !c["/chat/room"] || c["/chat/admin/x"] {
			t.Fatalf("alice received %v", c)
		}
		if c := got(root); !c["/chat/room"] || !c["/chat/admin/x"] {
			// both were published before root connected: one connect may
			// carry both or the first only
			c2 := got(root)
			for k := range c2 {
				c[k] = true
			}
			if !c["/chat/room"] || !c["/chat/admin/x"] {
				t.Fatalf("root received %v", c)
			}
		}
		if c := got(bob); !c["/elsewhere"] || len(c) != 1 {
			t.Fatalf("bob received %v", c)
		}
	})
}

func TestEndToEndWebhook(t *testing.T) {
	wsrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req WebhookRequest
		_ = jsonDecode(r, &req)
		switch string(req.Ext) {
		case `{"user":"gina"}`:
			_, _ = w.Write([]byte(`{"allow":true,"user":"gina","grants":[{"pattern":"/g/**","subscribe":true,"publish":true},{"pattern":"/ro/*","subscribe":true}]}`))
		default:
			_, _ = w.Write([]byte(`{"allow":false}`))
		}
	}))
	defer wsrv.Close()
	wh, err := NewWebhook(WebhookConfig{URL: wsrv.URL, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, NewPolicy(wh, nil))
	p := n.peer
	expectFail(t, p, handshakeMsg(bayeuxtest.Msg{"user": "mallory"}), "403::Authentication failed")
	gina := p.Handshake(bayeuxtest.Msg{"user": "gina"})
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": gina, "subscription": []string{"/g/**", "/ro/*"}})
	p.MustSucceed(bayeuxtest.Msg{"channel": "/g/a", "clientId": gina, "data": 1})
	expectFail(t, p, bayeuxtest.Msg{"channel": "/ro/a", "clientId": gina, "data": 1}, "403:/ro/a:Publish denied")
	expectFail(t, p, bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": gina, "subscription": "/other"}, "403:/other:Subscription denied")
}

func TestEndToEndWebhookUnavailable(t *testing.T) {
	wsrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer wsrv.Close()
	wh, err := NewWebhook(WebhookConfig{URL: wsrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, NewPolicy(wh, nil))
	r := expectFail(t, n.peer, handshakeMsg(nil), "503::Authentication unavailable")
	// Unavailable is not a denial: the client retries after a pause of
	// 1 to 3 s, never in a zero-interval loop.
	adv, _ := r["advice"].(map[string]any)
	if iv, _ := adv["interval"].(float64); adv["reconnect"] != "retry" || iv < 1000 || iv > 3000 {
		t.Fatalf("advice %v", r["advice"])
	}
	if n.pol.pendingCount() != 0 {
		t.Fatal("identity left pending")
	}
}

// A Policy installed without its Extension fails closed.
func TestPolicyWithoutExtension(t *testing.T) {
	j, err := NewJWT(JWTConfig{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	pol := NewPolicy(j, nil)
	b, err := broker.New(broker.Config{Policy: pol, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b)
	client := &http.Client{Transport: &http.Transport{}}
	defer func() {
		client.CloseIdleConnections()
		srv.Close()
	}()
	p := &bayeuxtest.Peer{T: t, URL: srv.URL, Client: client}
	id := p.Handshake(bayeuxtest.Msg{"authToken": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix()})})
	expectFail(t, p, bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/x"}, "403::Not authenticated")
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := write("secret", string(testSecret)+"\n")
	aclFile := write("acl.json", testACL)
	rsaKey := mustRSA(t)
	pub := write("pub.pem", string(pemPublic(t, &rsaKey.PublicKey)))
	tests := []struct {
		name    string
		o       Options
		wantNil bool
		wantErr string
	}{
		{name: "nothing", o: Options{JWTRolesClaim: "roles"}, wantNil: true},
		{name: "hmac", o: Options{JWTHMACSecretFile: secret, JWTAudience: "a", JWTIssuer: "i", JWTRolesClaim: "roles"}},
		{name: "rsa", o: Options{JWTPublicKeyFile: pub}},
		{name: "webhook+acl", o: Options{Webhook: "http://127.0.0.1:1/auth", ACLFile: aclFile}},
		{name: "acl only", o: Options{ACLFile: aclFile}},
		{name: "both keys", o: Options{JWTHMACSecretFile: secret, JWTPublicKeyFile: pub}, wantErr: "not both"},
		{name: "jwt and webhook", o: Options{JWTHMACSecretFile: secret, Webhook: "http://x/"}, wantErr: "mutually exclusive"},
		{name: "audience alone", o: Options{JWTAudience: "a"}, wantErr: "without a JWT"},
		{name: "missing secret", o: Options{JWTHMACSecretFile: secret + ".nope"}, wantErr: "no such file"},
		{name: "private key as public", o: Options{JWTPublicKeyFile: secret}, wantErr: "no PEM block"},
		{name: "bad webhook", o: Options{Webhook: "nope"}, wantErr: "not an http"},
		{name: "bad acl", o: Options{ACLFile: secret}, wantErr: "acl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Build(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (p == nil) != tt.wantNil {
				t.Fatalf("policy %v, want nil %v", p, tt.wantNil)
			}
			if p != nil {
				p.Close()
			}
		})
	}
}
