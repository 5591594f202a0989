package channel

import (
	"errors"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		kind  Kind
		depth int
		err   error
	}{
		{"/foo", Concrete, 1, nil},
		{"/foo/bar", Concrete, 2, nil},
		{"/a-b_c!~()$@/X9", Concrete, 2, nil},
		{"/meta/handshake", Concrete, 2, nil},
		{"/foo/*", WildcardOne, 2, nil},
		{"/foo/**", WildcardDeep, 2, nil},
		{"/*", WildcardOne, 1, nil},
		{"/**", WildcardDeep, 1, nil},
		{"", 0, 0, ErrEmpty},
		{"foo", 0, 0, ErrNoLeadingSlash},
		{"/", 0, 0, ErrEmptySegment},
		{"/a//b", 0, 0, ErrEmptySegment},
		{"/a/", 0, 0, ErrEmptySegment},
		{"/a/*/b", 0, 0, ErrWildcardPosition},
		{"/a/**/b", 0, 0, ErrWildcardPosition},
		{"/a/b*", 0, 0, ErrWildcardPosition},
		{"/a/***", 0, 0, ErrWildcardPosition},
		{"/a b", 0, 0, ErrInvalidChar},
		{"/a.b", 0, 0, ErrInvalidChar},
		{"/ü", 0, 0, ErrInvalidChar},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, depth, err := Parse(tt.name)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Parse(%q) err = %v, want %v", tt.name, err, tt.err)
			}
			if err == nil && (kind != tt.kind || depth != tt.depth) {
				t.Fatalf("Parse(%q) = %v,%d want %v,%d", tt.name, kind, depth, tt.kind, tt.depth)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"/foo/*", "/foo/bar", true},
		{"/foo/*", "/foo", false},
		{"/foo/*", "/foobar", false},
		{"/foo/*", "/foo/bar/baz", false},
		{"/foo/**", "/foo/bar", true},
		{"/foo/**", "/foo/bar/baz", true},
		{"/foo/**", "/foo", false},
		{"/foo/**", "/foobar/x", false},
		{"/**", "/a", true},
		{"/*", "/a", true},
		{"/*", "/a/b", false},
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/bc", false},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// TestCandidatesAgreeWithMatch checks that Candidates lists exactly the
// patterns Match accepts, over a small universe of names and patterns.
func TestCandidatesAgreeWithMatch(t *testing.T) {
	names := []string{"/a", "/b", "/a/b", "/a/c", "/a/b/c", "/ab", "/ab/c", "/a/b/c/d"}
	var patterns []string
	for _, n := range names {
		patterns = append(patterns, n, n+"/*", n+"/**")
	}
	patterns = append(patterns, "/*", "/**")
	for _, n := range names {
		c := Candidates(nil, n)
		for _, p := range patterns {
			if Match(p, n) != slices.Contains(c, p) {
				t.Errorf("name %q pattern %q: Match=%v, in Candidates=%v (%v)", n, p, Match(p, n), !Match(p, n), c)
			}
		}
	}
	if got, want := Candidates(nil, "/a/b/c"), []string{"/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**"}; !slices.Equal(got, want) {
		t.Fatalf("Candidates = %v, want %v", got, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/foo", "/a/*", "/a/**", "/a//b", "foo", "/a/*/b", "/ü", "/**"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, depth, err := Parse(s)
		if err != nil {
			return
		}
		if depth < 1 || depth > MaxDepth {
			t.Fatalf("depth %d", depth)
		}
		if (kind != Concrete) != IsWildcard(s) {
			t.Fatalf("kind %v but IsWildcard %v", kind, IsWildcard(s))
		}
		if kind == Concrete {
			for _, p := range Candidates(nil, s) {
				if !Match(p, s) {
					t.Fatalf("candidate %q does not match %q", p, s)
				}
			}
		}
	})
}

func BenchmarkCandidates(b *testing.B) {
	b.ReportAllocs()
	buf := make([]string, 0, 8)
	for b.Loop() {
		buf = Candidates(buf[:0], "/chat/room/42/messages")
	}
}

func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"/chat/room/42/messages", "/chat/room/**", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Parse(name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
