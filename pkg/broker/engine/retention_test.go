package engine

import (
	"testing"
	"time"
)

func TestRetentionFor(t *testing.T) {
	rules, err := ParseRetentionRules("/chat/**=500:10m, /chat/room/*=50:1m,/quotes/ibm=5:2s")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRetention(RetentionRule{Size: 1000, TTL: 5 * time.Minute}, rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ch   string
		size int
		ttl  time.Duration
	}{
		{"/other", 1000, 5 * time.Minute},
		{"/chat/x", 500, 10 * time.Minute},
		{"/chat/room/1", 50, time.Minute},
		{"/chat/room/1/deep", 500, 10 * time.Minute},
		{"/quotes/ibm", 5, 2 * time.Second},
		{"/quotes/msft", 1000, 5 * time.Minute},
	} {
		size, ttl := r.For(tc.ch)
		if size != tc.size || ttl != tc.ttl {
			t.Errorf("For(%s) = %d, %v; want %d, %v", tc.ch, size, ttl, tc.size, tc.ttl)
		}
	}
	if r.MaxTTL() != 10*time.Minute {
		t.Errorf("MaxTTL = %v", r.MaxTTL())
	}
}

func TestRetentionInvalid(t *testing.T) {
	for _, spec := range []string{"/a", "/a=1", "/a=x:1s", "/a=1:x"} {
		if _, err := ParseRetentionRules(spec); err == nil {
			t.Errorf("ParseRetentionRules(%q): no error", spec)
		}
	}
	for _, rules := range [][]RetentionRule{
		{{Pattern: "bad", Size: 1, TTL: time.Second}},
		{{Pattern: "/a", Size: 0, TTL: time.Second}},
		{{Pattern: "/a", Size: 1, TTL: 0}},
	} {
		if _, err := NewRetention(RetentionRule{Size: 1, TTL: time.Second}, rules); err == nil {
			t.Errorf("NewRetention(%v): no error", rules)
		}
	}
}
