package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testACL = `{"rules":[
  {"pattern":"/chat/admin/**","subscribe":["role:admin"],"publish":["role:admin"]},
  {"pattern":"/chat/**","subscribe":["authenticated"],"publish":["user:alice","claim:tenant=acme"]},
  {"pattern":"/public/*","subscribe":["*"]},
  {"pattern":"/news/sports","subscribe":["*"],"publish":["role:editor"]},
  {"pattern":"/news/**","subscribe":["user:carol"]},
  {"pattern":"/num/*","subscribe":["claim:level=3","claim:beta=true"]}
]}`

func TestCovers(t *testing.T) {
	tests := []struct {
		pattern, req string
		want         bool
	}{
		{"/chat/**", "/chat/a", true},
		{"/chat/**", "/chat/a/b", true},
		{"/chat/**", "/chat/*", true},
		{"/chat/**", "/chat/**", true},
		{"/chat/**", "/chat/a/**", true},
		{"/chat/**", "/chat/a/*", true},
		{"/chat/**", "/chat", false},
		{"/chat/**", "/chatter/a", false},
		{"/chat/**", "/**", false},
		{"/chat/*", "/chat/a", true},
		{"/chat/*", "/chat/*", true},
		{"/chat/*", "/chat/**", false},
		{"/chat/*", "/chat/a/b", false},
		{"/chat/*", "/chat/a/*", false},
		{"/chat/a", "/chat/a", true},
		{"/chat/a", "/chat/*", false},
		{"/chat/a", "/chat/**", false},
		{"/chat/a", "/chat/b", false},
		{"/**", "/anything/at/all", true},
		{"/**", "/*", true},
		{"/*", "/**", false},
		{"/chat/**", "bad", false},
	}
	for _, tt := range tests {
		if got := Covers(tt.pattern, tt.req); got != tt.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tt.pattern, tt.req, got, tt.want)
		}
	}
}

func TestACLMatrix(t *testing.T) {
	acl, err := ParseACL([]byte(testACL))
	if err != nil {
		t.Fatal(err)
	}
	var (
		anon  *Identity
		alice = &Identity{User: "alice"}
		admin = &Identity{User: "root", Roles: []string{"admin"}}
		acme  = &Identity{User: "dan", Claims: map[string]any{"tenant": []any{"x", "acme"}}}
		edit  = &Identity{User: "ed", Roles: []string{"editor"}}
		carol = &Identity{User: "carol"}
		num   = &Identity{User: "n", Claims: map[string]any{"level": float64(3)}}
		beta  = &Identity{User: "b", Claims: map[string]any{"beta": true}}
	)
	S, P := OpSubscribe, OpPublish
	tests := []struct {
		who  string
		id   *Identity
		op   Op
		ch   string
		want bool
	}{
		{"anon", anon, S, "/chat/room", false},
		{"alice", alice, S, "/chat/room", true},
		{"alice", alice, S, "/chat/*", true},
		{"alice", alice, S, "/chat/room/**", true},
		{"alice", alice, S, "/chat/admin/x", false},
		{"alice", alice, S, "/chat/admin/*", false},
		{"alice wide wildcard reaching admin", alice, S, "/chat/**", false},
		{"admin", admin, S, "/chat/**", true},
		{"admin", admin, S, "/chat/admin/**", true},
		{"alice", alice, P, "/chat/room", true},
		{"alice", alice, P, "/chat/admin/x", false},
		{"admin not in chat publish list", admin, P, "/chat/room", false},
		{"admin", admin, P, "/chat/admin/x", true},
		{"claim array", acme, P, "/chat/room", true},
		{"claim array", acme, S, "/chat/room", true},
		{"anon public", anon, S, "/public/x", true},
		{"anon public wildcard", anon, S, "/public/*", true},
		{"anon public deep wildcard not covered", anon, S, "/public/**", false},
		{"anon public nested", anon, S, "/public/x/y", false},
		{"nobody publishes public", admin, P, "/public/x", false},
		{"concrete rule does not cover /*", anon, S, "/news/*", false},
		{"concrete rule", anon, S, "/news/sports", true},
		{"editor", edit, P, "/news/sports", true},
		{"alice", alice, P, "/news/sports", false},
		{"carol news wildcard (sports allows *)", carol, S, "/news/**", true},
		{"alice news wildcard", alice, S, "/news/**", false},
		{"number claim", num, S, "/num/a", true},
		{"bool claim", beta, S, "/num/a", true},
		{"no claim", alice, S, "/num/a", false},
		{"default deny", admin, S, "/other", false},
		{"default deny root wildcard", admin, S, "/**", false},
		{"invalid name", admin, S, "chat", false},
	}
	for _, tt := range tests {
		if got := acl.Allowed(tt.id, tt.op, tt.ch); got != tt.want {
			t.Errorf("%s %s %s = %v, want %v", tt.who, tt.op, tt.ch, got, tt.want)
		}
	}
}

func TestGrants(t *testing.T) {
	acl, err := ParseACL([]byte(`{"rules":[{"pattern":"/acl/**","subscribe":["*"],"publish":["*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	id := &Identity{User: "g", Grants: []Grant{
		{Pattern: "/a/secret/**", Subscribe: false},
		{Pattern: "/a/**", Subscribe: true, Publish: false},
		{Pattern: "/b/x", Publish: true},
		{Pattern: "/acl/denied", Subscribe: false},
	}}
	S, P := OpSubscribe, OpPublish
	tests := []struct {
		acl  *ACL
		id   *Identity
		op   Op
		ch   string
		want bool
	}{
		{nil, id, S, "/a/x", true},
		{nil, id, S, "/a/*", true},
		{nil, id, S, "/a/**", false}, // would reach /a/secret/
		{nil, id, S, "/a/secret/x", false},
		{nil, id, P, "/a/x", false},
		{nil, id, P, "/b/x", true},
		{nil, id, S, "/b/x", false},
		{nil, id, S, "/c", false},                  // grants but no ACL: deny the rest
		{nil, &Identity{User: "u"}, S, "/c", true}, // no grants, no ACL: allow
		{nil, nil, P, "/c", true},
		{acl, id, S, "/acl/x", true}, // falls through to the ACL
		{acl, id, S, "/acl/denied", false},
		{acl, id, S, "/acl/**", false},
		{acl, id, S, "/c", false},
	}
	for _, tt := range tests {
		p := NewPolicy(nil, tt.acl)
		if got := p.Allowed(tt.id, tt.op, tt.ch); got != tt.want {
			t.Errorf("acl=%v %v %s %s = %v, want %v", tt.acl != nil, tt.id, tt.op, tt.ch, got, tt.want)
		}
	}
}

func TestParseACLErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not JSON", `{`, "unexpected EOF"},
		{"unknown field", `{"rules":[{"pattern":"/a","subscribers":["*"]}]}`, "unknown field"},
		{"no rules", `{}`, "missing"},
		{"bad pattern", `{"rules":[{"pattern":"/a/**/b"}]}`, "wildcard"},
		{"bad principal", `{"rules":[{"pattern":"/a","subscribe":["admins"]}]}`, "unknown principal"},
		{"empty user", `{"rules":[{"pattern":"/a","subscribe":["user:"]}]}`, "unknown principal"},
		{"claim without value", `{"rules":[{"pattern":"/a","publish":["claim:tenant"]}]}`, "claim:NAME=VALUE"},
		{"trailing data", `{"rules":[]} {}`, "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseACL([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "acl.json")
	if err := os.WriteFile(p, []byte(testACL), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadACL(p); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadACL(p + ".missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}
