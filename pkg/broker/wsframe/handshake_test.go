package wsframe

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAcceptKey(t *testing.T) {
	// The example of RFC 6455 section 1.3.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
}

func TestCheckUpgrade(t *testing.T) {
	good := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/cometd", nil)
		r.Header.Set("Connection", "keep-alive, Upgrade")
		r.Header.Set("Upgrade", "WebSocket")
		r.Header.Set("Sec-WebSocket-Version", "13")
		r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		return r
	}
	cases := []struct {
		name   string
		change func(r *http.Request)
		status int // 0: accepted
	}{
		{"valid", func(*http.Request) {}, 0},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, http.StatusMethodNotAllowed},
		{"HTTP/2", func(r *http.Request) { r.ProtoMajor = 2 }, http.StatusHTTPVersionNotSupported},
		{"no Connection upgrade", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, http.StatusUpgradeRequired},
		{"no Upgrade", func(r *http.Request) { r.Header.Del("Upgrade") }, http.StatusUpgradeRequired},
		{"version 8", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }, http.StatusUpgradeRequired},
		{"no key", func(r *http.Request) { r.Header.Del("Sec-WebSocket-Key") }, http.StatusBadRequest},
		{"short key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "c2hvcnQ=") }, http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := good()
			c.change(r)
			key, he := CheckUpgrade(r) // typed: its status is read without errors.As
			switch {
			case c.status == 0 && (he != nil || key != "dGhlIHNhbXBsZSBub25jZQ=="):
				t.Fatalf("want accepted, got %q, %v", key, he)
			case c.status != 0 && (he == nil || he.Status != c.status || he.Msg == ""):
				t.Fatalf("want status %d, got %v", c.status, he)
			}
		})
	}
}
