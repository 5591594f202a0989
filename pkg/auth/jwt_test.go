package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testNow    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEC(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims are valid claims at testNow, with overrides (nil deletes).
func claims(over map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub":    "alice",
		"exp":    testNow.Add(time.Hour).Unix(),
		"nbf":    testNow.Add(-time.Minute).Unix(),
		"aud":    []string{"bayeux", "other"},
		"iss":    "https://issuer.example",
		"roles":  []string{"admin", "ops"},
		"tenant": "acme",
	}
	for k, v := range over {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func handshakeWith(ext any) *protocol.Message {
	m := &protocol.Message{Channel: protocol.ChannelHandshake, Version: "1.0"}
	if ext != nil {
		raw, _ := json.Marshal(ext)
		m.Ext = raw
	}
	return m
}

func tokenMsg(tok string) *protocol.Message { return handshakeWith(map[string]any{TokenExtField: tok}) }

func TestJWT(t *testing.T) {
	rsaKey := mustRSA(t)
	ecKey := mustEC(t, elliptic.P256())
	ec384 := mustEC(t, elliptic.P384())
	otherRSA := mustRSA(t)
	clock := func() time.Time { return testNow }
	newJ := func(cfg JWTConfig) *JWT {
		cfg.Now = clock
		cfg.Audience, cfg.Issuer = "bayeux", "https://issuer.example"
		j, err := NewJWT(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	hmacJ := newJ(JWTConfig{HMACSecret: testSecret})
	rsaJ := newJ(JWTConfig{PublicKey: &rsaKey.PublicKey})
	ecJ := newJ(JWTConfig{PublicKey: &ecKey.PublicKey})
	groupsJ := newJ(JWTConfig{HMACSecret: testSecret, RolesClaim: "groups"})

	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))
	// The classic confusion: an HS256 token whose secret is the RSA public key.
	confused := sign(t, jwt.SigningMethodHS256, pemPublic(t, &rsaKey.PublicKey), claims(nil))

	tests := []struct {
		name    string
		j       *JWT
		m       *protocol.Message
		want    string // expected error, "" for success
		user    string
		roles   []string
		claimOK bool
	}{
		{name: "HS256 valid", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(nil))), user: "alice", roles: []string{"admin", "ops"}, claimOK: true},
		{name: "HS512 valid", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS512, testSecret, claims(nil))), user: "alice", roles: []string{"admin", "ops"}},
		{name: "single string role", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"roles": "admin"}))), user: "alice", roles: []string{"admin"}},
		{name: "custom roles claim", j: groupsJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"groups": []string{"g1"}}))), user: "alice", roles: []string{"g1"}},
		{name: "aud as a string", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": "bayeux"}))), user: "alice", roles: []string{"admin", "ops"}},
		{name: "expired", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": testNow.Add(-time.Hour).Unix()}))), want: "403::Token expired"},
		{name: "expired within leeway", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": testNow.Add(-10 * time.Second).Unix()}))), user: "alice", roles: []string{"admin", "ops"}},
		{name: "no exp", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": nil}))), want: "403::Invalid token"},
		{name: "nbf in the future", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"nbf": testNow.Add(time.Hour).Unix()}))), want: "403::Invalid token"},
		{name: "wrong aud", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": "someone-else"}))), want: "403::Invalid token"},
		{name: "no aud", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": nil}))), want: "403::Invalid token"},
		{name: "wrong iss", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://evil.example"}))), want: "403::Invalid token"},
		{name: "no sub", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sub": nil}))), want: "403::Invalid token"},
		{name: "bad signature", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil))), want: "403::Invalid token"},
		{name: "tampered payload", j: hmacJ, m: tokenMsg(tamper(t, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil)))), want: "403::Invalid token"},
		{name: "alg none vs HMAC", j: hmacJ, m: tokenMsg(noneTok), want: "403::Invalid token"},
		{name: "alg none vs RSA", j: rsaJ, m: tokenMsg(noneTok), want: "403::Invalid token"},
		{name: "HS256 token vs RSA key", j: rsaJ, m: tokenMsg(confused), want: "403::Invalid token"},
		{name: "RS256 valid", j: rsaJ, m: tokenMsg(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil))), user: "alice", roles: []string{"admin", "ops"}},
		{name: "RS256 other key", j: rsaJ, m: tokenMsg(sign(t, jwt.SigningMethodRS256, otherRSA, claims(nil))), want: "403::Invalid token"},
		{name: "RS256 token vs HMAC", j: hmacJ, m: tokenMsg(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil))), want: "403::Invalid token"},
		{name: "ES256 valid", j: ecJ, m: tokenMsg(sign(t, jwt.SigningMethodES256, ecKey, claims(nil))), user: "alice", roles: []string{"admin", "ops"}},
		{name: "ES384 token vs P-256 key", j: ecJ, m: tokenMsg(sign(t, jwt.SigningMethodES384, ec384, claims(nil))), want: "403::Invalid token"},
		{name: "RS256 token vs EC key", j: ecJ, m: tokenMsg(sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil))), want: "403::Invalid token"},
		{name: "no ext", j: hmacJ, m: handshakeWith(nil), want: "403::Authentication required"},
		{name: "no token", j: hmacJ, m: handshakeWith(map[string]any{"other": 1}), want: "403::Authentication required"},
		{name: "token not a string", j: hmacJ, m: handshakeWith(map[string]any{TokenExtField: 42}), want: "403::Invalid token"},
		{name: "garbage token", j: hmacJ, m: tokenMsg("not.a.jwt"), want: "403::Invalid token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.j.Authenticate(context.Background(), broker.RequestInfo{}, tt.m)
			if tt.want != "" {
				if err == nil || err.String() != tt.want {
					t.Fatalf("err = %v, want %s (identity %+v)", err, tt.want, id)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if id.User != tt.user || !slices.Equal(id.Roles, tt.roles) {
				t.Fatalf("identity %+v, want user %q roles %v", id, tt.user, tt.roles)
			}
			if tt.claimOK && !claimHas(id.Claims["tenant"], "acme") {
				t.Fatalf("claims %v lack tenant=acme", id.Claims)
			}
		})
	}
}

func tamper(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload := jwt.MapClaims{}
	raw, err := jwt.NewParser().DecodeSegment(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	payload["sub"] = "mallory"
	b, _ := json.Marshal(payload)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestNewJWTErrors(t *testing.T) {
	rsaKey := mustRSA(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  JWTConfig
		want string
	}{
		{"nothing", JWTConfig{}, "no HMAC secret"},
		{"both", JWTConfig{HMACSecret: testSecret, PublicKey: &rsaKey.PublicKey}, "not both"},
		{"short secret", JWTConfig{HMACSecret: []byte("short")}, "at least 32"},
		{"small RSA", JWTConfig{PublicKey: &small.PublicKey}, "at least 2048"},
		{"private key", JWTConfig{PublicKey: rsaKey}, "unsupported public key type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewJWT(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	rsaKey := mustRSA(t)
	ecKey := mustEC(t, elliptic.P256())
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret, err := ReadHMACSecretFile(write("secret", append(slices.Clone(testSecret), "\r\n"...)))
	if err != nil || string(secret) != string(testSecret) {
		t.Fatalf("secret %q, %v", secret, err)
	}
	tests := []struct {
		name    string
		content []byte
		check   func(any) bool
		wantErr string
	}{
		{"PKIX RSA", pemPublic(t, &rsaKey.PublicKey), func(k any) bool { _, ok := k.(*rsa.PublicKey); return ok }, ""},
		{"PKCS1 RSA", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), func(k any) bool { _, ok := k.(*rsa.PublicKey); return ok }, ""},
		{"PKIX EC", pemPublic(t, &ecKey.PublicKey), func(k any) bool { _, ok := k.(*ecdsa.PublicKey); return ok }, ""},
		{"private key refused", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), nil, "private keys are refused"},
		{"not PEM", []byte("hello"), nil, "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ReadPublicKeyFile(write(strings.ReplaceAll(tt.name, " ", "_"), tt.content))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(k) {
				t.Fatalf("key %T, err %v", k, err)
			}
		})
	}
}
