package auth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
)

// Op is an operation checked by the ACL.
type Op int

const (
	OpSubscribe Op = iota
	OpPublish
)

func (o Op) String() string {
	if o == OpPublish {
		return "publish"
	}
	return "subscribe"
}

// Rule is one ACL entry: who may subscribe and who may publish on the
// channels its pattern covers. An omitted or empty list allows nobody.
type Rule struct {
	Pattern   string   `json:"pattern"`
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
}

// ACLFile is the JSON format of an ACL file.
type ACLFile struct {
	Rules []Rule `json:"rules"`
}

// ACL is an ordered list of rules: the first rule whose pattern covers the
// requested channel decides; no covering rule denies. It is immutable.
type ACL struct {
	rules []rule
}

type rule struct {
	pattern   string
	kind      channel.Kind
	subscribe []principal
	publish   []principal
}

type principalKind int

const (
	pAnyone principalKind = iota
	pAuthenticated
	pUser
	pRole
	pClaim
)

type principal struct {
	kind  principalKind
	name  string // user, role or claim name
	value string // claim value
}

// LoadACL reads an ACL file (see ParseACL).
func LoadACL(path string) (*ACL, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	a, err := ParseACL(b)
	if err != nil {
		return nil, fmt.Errorf("acl %s: %w", path, err)
	}
	return a, nil
}

// ParseACL parses the JSON form of ACLFile. Unknown fields, invalid
// patterns and unknown principal forms are errors.
func ParseACL(b []byte) (*ACL, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f ACLFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after the ACL object")
	}
	if f.Rules == nil {
		return nil, fmt.Errorf(`missing "rules"`)
	}
	return NewACL(f.Rules)
}

// NewACL validates rules and builds an ACL.
func NewACL(rules []Rule) (*ACL, error) {
	a := &ACL{}
	for i, r := range rules {
		kind, _, err := channel.Parse(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("rule %d: pattern %q: %w", i, r.Pattern, err)
		}
		nr := rule{pattern: r.Pattern, kind: kind}
		if nr.subscribe, err = parsePrincipals(r.Subscribe); err != nil {
			return nil, fmt.Errorf("rule %d (%s): subscribe: %w", i, r.Pattern, err)
		}
		if nr.publish, err = parsePrincipals(r.Publish); err != nil {
			return nil, fmt.Errorf("rule %d (%s): publish: %w", i, r.Pattern, err)
		}
		a.rules = append(a.rules, nr)
	}
	return a, nil
}

func parsePrincipals(ss []string) ([]principal, error) {
	var out []principal
	for _, s := range ss {
		var p principal
		switch {
		case s == "*":
			p.kind = pAnyone
		case s == "authenticated":
			p.kind = pAuthenticated
		case strings.HasPrefix(s, "user:") && len(s) > len("user:"):
			p = principal{kind: pUser, name: s[len("user:"):]}
		case strings.HasPrefix(s, "role:") && len(s) > len("role:"):
			p = principal{kind: pRole, name: s[len("role:"):]}
		case strings.HasPrefix(s, "claim:"):
			name, value, ok := strings.Cut(s[len("claim:"):], "=")
			if !ok || name == "" {
				return nil, fmt.Errorf("principal %q: want claim:NAME=VALUE", s)
			}
			p = principal{kind: pClaim, name: name, value: value}
		default:
			return nil, fmt.Errorf(`unknown principal %q (want "*", "authenticated", user:NAME, role:NAME or claim:NAME=VALUE)`, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// Covers reports whether pattern (a valid channel name, maybe a wildcard)
// covers req (a valid name, maybe a wildcard): every concrete channel req
// matches is matched by pattern. "/a/**" covers "/a/b", "/a/*", "/a/b/**";
// "/a/*" covers "/a/b" and "/a/*" but not "/a/**"; "/a/b" covers only itself.
func Covers(pattern, req string) bool {
	pk, _, err1 := channel.Parse(pattern)
	rk, _, err2 := channel.Parse(req)
	if err1 != nil || err2 != nil {
		return false
	}
	return covers(pattern, pk, req, rk)
}

func covers(pattern string, pk channel.Kind, req string, rk channel.Kind) bool {
	// channel.Match treats a trailing "*" or "**" of req as a literal
	// segment, which is right except for "/a/*" against "/a/**".
	if pk == channel.WildcardOne && rk == channel.WildcardDeep {
		return false
	}
	return channel.Match(pattern, req)
}

// Allowed reports whether id (nil: anonymous) may perform op on name: a
// concrete channel for OpPublish, a channel or wildcard pattern for
// OpSubscribe. Rules are tried in order: the first rule covering name
// decides, except that a rule met before it whose pattern lies inside name
// (e.g. "/chat/admin/**" for a subscription to "/chat/**") must allow too,
// since the subscription would receive its channels. No covering rule
// denies.
func (a *ACL) Allowed(id *Identity, op Op, name string) bool {
	kind, _, err := channel.Parse(name)
	if err != nil {
		return false
	}
	allowed, _ := decide(len(a.rules), func(i int) (string, channel.Kind, bool) {
		r := &a.rules[i]
		ps := r.subscribe
		if op == OpPublish {
			ps = r.publish
		}
		for _, p := range ps {
			if p.matches(id) {
				return r.pattern, r.kind, true
			}
		}
		return r.pattern, r.kind, false
	}, name, kind)
	return allowed
}

// decide runs the first-covering-entry-decides walk over n entries (see
// ACL.Allowed); decided is false when no entry covers name and none inside
// it denied.
func decide(n int, entry func(int) (string, channel.Kind, bool), name string, kind channel.Kind) (allowed, decided bool) {
	for i := 0; i < n; i++ {
		pat, pk, ok := entry(i)
		if covers(pat, pk, name, kind) {
			return ok, true
		}
		if !ok && covers(name, kind, pat, pk) {
			return false, true // part of what name receives is denied
		}
	}
	return false, false
}

// grantDecision applies id's grants like ACL rules; decided is false when
// no grant covers name (and none inside it denies).
func grantDecision(id *Identity, op Op, name string) (allowed, decided bool) {
	if id == nil || len(id.Grants) == 0 {
		return false, false
	}
	kind, _, err := channel.Parse(name)
	if err != nil {
		return false, true
	}
	return decide(len(id.Grants), func(i int) (string, channel.Kind, bool) {
		g := id.Grants[i]
		gk, _, err := channel.Parse(g.Pattern)
		if err != nil {
			return "/", channel.Concrete, true // never covers anything; skipped
		}
		if op == OpPublish {
			return g.Pattern, gk, g.Publish
		}
		return g.Pattern, gk, g.Subscribe
	}, name, kind)
}

func (p principal) matches(id *Identity) bool {
	switch p.kind {
	case pAnyone:
		return true
	case pAuthenticated:
		return id != nil
	}
	if id == nil {
		return false
	}
	switch p.kind {
	case pUser:
		return id.User == p.name
	case pRole:
		return id.HasRole(p.name)
	case pClaim:
		return claimHas(id.Claims[p.name], p.value)
	}
	return false
}

// claimHas reports whether a claim value is the string want, or an array
// containing it. Numbers and booleans compare by their JSON text.
func claimHas(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if claimHas(e, want) {
				return true
			}
		}
		return false
	case []string:
		for _, e := range x {
			if e == want {
				return true
			}
		}
		return false
	case float64, bool, json.Number:
		b, err := json.Marshal(x)
		return err == nil && string(b) == want
	}
	return false
}
