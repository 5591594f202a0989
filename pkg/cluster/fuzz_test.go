package cluster

import (
	"strings"
	"testing"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// FuzzParseClientID checks the cluster's clientId parser: it accepts
// exactly a node tag followed by a broker's random part, all in the tag
// alphabet, returns the tag, and accepts the ids nodes issue.
func FuzzParseClientID(f *testing.F) {
	good := NodeTag("node-1") + strings.Repeat("b", broker.ClientIDRandomLen)
	for _, s := range []string{"", good, good[:31], good + "a", strings.ToUpper(good), "nosuchclient", good[:6] + "-" + good[7:],
		good[:6] + strings.Repeat("1", 26), strings.Repeat("\xff", 32)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tag, ok := ParseClientID(id)
		want := len(id) == TagLen+broker.ClientIDRandomLen
		for i := 0; want && i < len(id); i++ {
			want = strings.IndexByte(tagAlphabet, id[i]) >= 0
		}
		if ok != want {
			t.Fatalf("ParseClientID(%q) ok = %v, reference %v", id, ok, want)
		}
		if ok && tag != id[:TagLen] {
			t.Fatalf("ParseClientID(%q) tag = %q", id, tag)
		}
		if !ok && tag != "" {
			t.Fatalf("rejected id gave tag %q", tag)
		}
		// A node issues ids that parse to its tag.
		tb := NodeTag(id)
		if got, ok := ParseClientID(tb + strings.Repeat("a", broker.ClientIDRandomLen)); !ok || got != tb {
			t.Fatalf("tag %q: id does not parse (%q, %v)", tb, got, ok)
		}
	})
}
