package auth

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

func TestWebhook(t *testing.T) {
	type seen struct {
		req     WebhookRequest
		ctype   string
		decoded bool
	}
	tests := []struct {
		name    string
		status  int
		body    string
		delay   time.Duration
		want    string // expected error; "" allows
		user    string
		roles   []string
		grants  int
		claimOK bool
	}{
		{name: "allow", status: 200, body: `{"allow":true,"user":"alice","roles":["admin"],"claims":{"tenant":"acme"},"grants":[{"pattern":"/a/**","subscribe":true}]}`, user: "alice", roles: []string{"admin"}, grants: 1, claimOK: true},
		{name: "allow minimal", status: 200, body: `{"allow":true,"user":"bob"}`, user: "bob"},
		{name: "deny", status: 200, body: `{"allow":false,"user":"alice"}`, want: "403::Authentication failed"},
		{name: "empty object", status: 200, body: `{}`, want: "403::Authentication failed"},
		{name: "401", status: 401, body: `{"allow":true,"user":"alice"}`, want: "403::Authentication failed"},
		{name: "403", status: 403, body: ``, want: "403::Authentication failed"},
		{name: "500", status: 500, body: `{"allow":true,"user":"alice"}`, want: "503::Authentication unavailable"},
		{name: "redirect not followed", status: 302, body: ``, want: "503::Authentication unavailable"},
		{name: "bad JSON", status: 200, body: `{"allow":tru`, want: "503::Authentication unavailable"},
		{name: "wrong types", status: 200, body: `{"allow":"yes","user":"alice"}`, want: "503::Authentication unavailable"},
		{name: "allow without user", status: 200, body: `{"allow":true}`, want: "503::Authentication unavailable"},
		{name: "bad grant pattern", status: 200, body: `{"allow":true,"user":"a","grants":[{"pattern":"/a/**/b","subscribe":true}]}`, want: "503::Authentication unavailable"},
		{name: "too large", status: 200, body: `{"allow":true,"user":"a","pad":"` + strings.Repeat("x", maxWebhookResponse) + `"}`, want: "503::Authentication unavailable"},
		{name: "timeout", status: 200, body: `{"allow":true,"user":"alice"}`, delay: time.Second, want: "503::Authentication unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan seen, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var s seen
				s.ctype = r.Header.Get("Content-Type")
				b, _ := io.ReadAll(r.Body)
				s.decoded = r.Method == http.MethodPost && json.Unmarshal(b, &s.req) == nil
				got <- s
				if tt.delay > 0 {
					select {
					case <-time.After(tt.delay):
					case <-r.Context().Done():
						return
					}
				}
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			wh, err := NewWebhook(WebhookConfig{URL: srv.URL, Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer wh.Close()
			hdr := http.Header{}
			hdr.Set("Authorization", "Bearer abc")
			hdr.Set("X-Secret-Internal", "must not leak")
			info := broker.RequestInfo{Transport: "long-polling", RemoteAddr: "192.0.2.1:5000", Header: hdr}
			id, perr := wh.Authenticate(context.Background(), info, handshakeWith(map[string]any{"token": "t1"}))
			s := <-got
			if !s.decoded || s.ctype != "application/json" {
				t.Fatalf("webhook request not a JSON POST: %+v", s)
			}
			if string(s.req.Ext) != `{"token":"t1"}` || s.req.RemoteAddr != "192.0.2.1:5000" || s.req.Transport != "long-polling" {
				t.Fatalf("webhook request %+v", s.req)
			}
			if !slices.Equal(s.req.Headers["Authorization"], []string{"Bearer abc"}) || s.req.Headers["X-Secret-Internal"] != nil {
				t.Fatalf("forwarded headers %v", s.req.Headers)
			}
			if tt.want != "" {
				if perr == nil || perr.String() != tt.want {
					t.Fatalf("err = %v, want %s (identity %+v)", perr, tt.want, id)
				}
				return
			}
			if perr != nil {
				t.Fatalf("err = %v", perr)
			}
			if id.User != tt.user || !slices.Equal(id.Roles, tt.roles) || len(id.Grants) != tt.grants {
				t.Fatalf("identity %+v", id)
			}
			if tt.claimOK && id.Claims["tenant"] != "acme" {
				t.Fatalf("claims %v", id.Claims)
			}
		})
	}
}

func TestWebhookUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	wh, err := NewWebhook(WebhookConfig{URL: "http://" + addr + "/auth", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Close()
	id, perr := wh.Authenticate(context.Background(), broker.RequestInfo{}, handshakeWith(nil))
	if perr == nil || perr.String() != "503::Authentication unavailable" || id != nil {
		t.Fatalf("identity %v, err %v", id, perr)
	}
}

func TestNewWebhookErrors(t *testing.T) {
	for _, u := range []string{"", "ftp://x/", "localhost:80", "http://"} {
		if _, err := NewWebhook(WebhookConfig{URL: u}); err == nil {
			t.Errorf("NewWebhook(%q) accepted", u)
		}
	}
}

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }
