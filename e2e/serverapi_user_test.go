package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

// TestServerAPIUsers: with JWT authentication, presence names each
// session's user, and a disconnect by user ends that user's sessions on
// every node (and nobody else's), asked through a node that holds none.
func TestServerAPIUsers(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("e2e-api-user-secret-0123456789abcdef")
	secretFile, keyFile := filepath.Join(dir, "jwt.secret"), filepath.Join(dir, "api-keys")
	for f, b := range map[string][]byte{secretFile: secret, keyFile: []byte(apiKey1 + "\n")} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := testproc.StartCluster(t, 3, "--auth-jwt-hmac-secret-file", secretFile, "--api-key-file", keyFile)
	token := func(sub string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ch := "/users/room"
	type session struct {
		user, id string
		node     int
	}
	var sessions []session
	for _, s := range []struct {
		user string
		node int
	}{{"alice", 0}, {"alice", 1}, {"bob", 1}} {
		p := &bayeuxtest.Peer{T: t, URL: c.Nodes[s.node].URL}
		id := p.Handshake(bayeuxtest.Msg{"authToken": token(s.user)})
		p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch})
		sessions = append(sessions, session{s.user, id, s.node})
	}
	api := serverapi.NewClient(c.Nodes[2].API, apiKey1, &http.Client{Timeout: 20 * time.Second})
	ctx := context.Background()
	p, err := api.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, s := range p.Sessions {
		users[s.ClientID] = s.User
	}
	for _, s := range sessions {
		if users[s.id] != s.user {
			t.Errorf("presence: session %s has user %q, want %q", s.id, users[s.id], s.user)
		}
	}
	r, err := api.Disconnect(ctx, serverapi.DisconnectRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{sessions[0].id, sessions[1].id}
	slices.Sort(want)
	if !slices.Equal(r.Disconnected, want) {
		t.Errorf("disconnect alice: %v, want %v", r.Disconnected, want)
	}
	p, err = api.Presence(ctx, ch)
	if err != nil || len(p.Sessions) != 1 || p.Sessions[0].User != "bob" {
		t.Errorf("presence after disconnecting alice: %+v %v", p, err)
	}
	if _, err := api.Disconnect(ctx, serverapi.DisconnectRequest{User: "alice", ClientID: sessions[2].id}); !serverapi.IsCode(err, serverapi.CodeBadRequest) {
		t.Errorf("disconnect with both user and clientId: %v, want bad_request", err)
	}
}
