package broker

import (
	"net/http"
	"testing"
)

func TestKeptHeader(t *testing.T) {
	req := http.Header{
		"Upgrade":           {"websocket"},
		"Sec-Websocket-Key": {"x"},
		"Authorization":     {"Bearer t"},
		"X-Tenant":          {"a", "b"},
		"User-Agent":        {"ua"},
	}
	for _, tc := range []struct {
		name string
		keep []string
		want http.Header
	}{
		{"nil keeps all but the websocket handshake", nil, http.Header{"Authorization": {"Bearer t"}, "X-Tenant": {"a", "b"}, "User-Agent": {"ua"}}},
		{"empty keeps nothing", []string{}, nil},
		{"listed only, any case", []string{"x-tenant", "Cookie"}, http.Header{"X-Tenant": {"a", "b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Broker{cfg: Config{KeepHeaders: tc.keep}}
			got := b.keptHeader(req)
			if len(got) != len(tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if g := got[k]; len(g) != len(v) || g[0] != v[0] {
					t.Fatalf("%s: got %v, want %v", k, g, v)
				}
			}
			if got != nil && len(got["X-Tenant"]) > 0 {
				got["X-Tenant"][0] = "changed"
				if req["X-Tenant"][0] != "a" {
					t.Fatal("the kept header shares the request's arrays")
				}
			}
		})
	}
}

func TestIsFormContent(t *testing.T) {
	for _, c := range []struct {
		ct   string
		want bool
	}{
		{"application/x-www-form-urlencoded", true},
		{"application/x-www-form-urlencoded; charset=UTF-8", true},
		{" Application/X-WWW-Form-URLEncoded ;charset=utf-8", true},
		{"application/json;charset=UTF-8", false},
		{"application/x-www-form-urlencodedx", false},
		{"", false},
	} {
		if got := isFormContent(c.ct); got != c.want {
			t.Errorf("isFormContent(%q) = %v, want %v", c.ct, got, c.want)
		}
	}
}
