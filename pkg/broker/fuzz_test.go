package broker

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// callbackRef is the JSONP callback grammar validCallback implements: a
// JavaScript identifier (ASCII) or a dotted path of them.
var callbackRef = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*$`)

// FuzzJSONPCallback checks validCallback against the reference grammar and
// that what it accepts can only produce a plain function call: the JSONP
// envelope is /**/cb(...); with no raw U+2028/U+2029, whatever the body.
func FuzzJSONPCallback(f *testing.F) {
	for _, s := range []string{
		"cb", "jQuery_123.cb", "$", "_", "a.b.c", "Faye.JSONP.cb0", strings.Repeat("a", 128), strings.Repeat("a", 129),
		"", "1abc", "a..b", ".a", "a.", "alert(1)", "a b", "<script>", "cb;alert(1)", "cb\u2028", "cb\x00", "a.1", "é", "a-b", "a[0]",
	} {
		f.Add(s, []byte(`[{"channel":"/a","data":"x\u2028y\u2029z"}]`))
	}
	f.Fuzz(func(t *testing.T, cb string, body []byte) {
		valid := validCallback(cb)
		if want := len(cb) <= 128 && callbackRef.MatchString(cb); valid != want {
			t.Fatalf("validCallback(%q) = %v, reference %v", cb, valid, want)
		}
		if !valid {
			return
		}
		out := appendJSONP(nil, cb, body)
		prefix := "/**/" + cb + "("
		if !bytes.HasPrefix(out, []byte(prefix)) || !bytes.HasSuffix(out, []byte(");")) {
			t.Fatalf("envelope %q", out)
		}
		if bytes.Contains(out, []byte("\u2028")) || bytes.Contains(out, []byte("\u2029")) {
			t.Fatalf("raw line separator in %q", out)
		}
		// The callback part is one call target: nothing that could end the
		// expression, open a comment or leave the script.
		if strings.ContainsAny(cb, "();/<>'\"` \t\r\n\\*+-=,[]{}") {
			t.Fatalf("accepted callback %q has a character outside identifiers", cb)
		}
	})
}

// FuzzClientID checks SplitClientID, the clientId shape check: it accepts
// exactly a prefix of the given length followed by ClientIDRandomLen
// characters of the id alphabet, splits without losing bytes, and accepts
// every id newSessionID issues, whatever the prefix.
func FuzzClientID(f *testing.F) {
	for _, s := range []string{
		"", "x", "abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz2", "aaaaaaabcdefghijklmnopqrstuvwxyz",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdef01234567890123456789", "abcdefghijklmnopqrstuvwx{}", "nosuchclient",
		strings.Repeat("7", 32), strings.Repeat("a", 1000), "abcdef\x00ghijklmnopqrstuvwxyz234567",
	} {
		f.Add(s, 0)
		f.Add(s, 6)
	}
	f.Fuzz(func(t *testing.T, id string, prefixLen int) {
		prefixLen = ((prefixLen % 16) + 16) % 16
		prefix, random, ok := SplitClientID(id, prefixLen)
		want := len(id) == prefixLen+ClientIDRandomLen
		for i := prefixLen; want && i < len(id); i++ {
			want = strings.IndexByte("abcdefghijklmnopqrstuvwxyz234567", id[i]) >= 0
		}
		if ok != want {
			t.Fatalf("SplitClientID(%q, %d) ok = %v, reference %v", id, prefixLen, ok, want)
		}
		if ok {
			if prefix+random != id || len(prefix) != prefixLen || len(random) != ClientIDRandomLen {
				t.Fatalf("SplitClientID(%q, %d) = %q, %q", id, prefixLen, prefix, random)
			}
			if _, err := idEncoding.DecodeString(random); err != nil {
				t.Fatalf("random part %q does not decode: %v", random, err)
			}
		} else if prefix != "" || random != "" {
			t.Fatalf("rejected id split into %q, %q", prefix, random)
		}
		// Whatever the prefix, an issued id parses back to it.
		p := id[:min(prefixLen, len(id))]
		issued := newSessionID(p)
		if gp, _, ok := SplitClientID(issued, len(p)); !ok || gp != p {
			t.Fatalf("issued id %q (prefix %q) does not parse: %q %v", issued, p, gp, ok)
		}
	})
}
