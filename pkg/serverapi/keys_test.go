package serverapi

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("# backend keys\n\n  first-key-0123456789  \nsecond-key-0123456789\n")
	k, err := LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key  string
		want bool
	}{
		{"first-key-0123456789", true},
		{"second-key-0123456789", true},
		{"", false},
		{"# backend keys", false},
		{"first-key-012345678", false},
		{"first-key-01234567890", false},
	}
	for _, c := range cases {
		if got := k.Check(c.key); got != c.want {
			t.Errorf("Check(%q) = %v, want %v", c.key, got, c.want)
		}
	}
	// Rotation: the new file replaces the keys; a bad file keeps them.
	write("third-key-0123456789\n")
	if err := k.Reload(); err != nil {
		t.Fatal(err)
	}
	if k.Check("first-key-0123456789") || !k.Check("third-key-0123456789") {
		t.Error("reload did not replace the keys")
	}
	write("# none\n")
	if err := k.Reload(); !errors.Is(err, ErrNoKeys) {
		t.Errorf("reload of a file without keys: %v, want ErrNoKeys", err)
	}
	if !k.Check("third-key-0123456789") {
		t.Error("a failed reload dropped the keys")
	}
	write("short\n")
	if err := k.Reload(); err == nil {
		t.Error("a short key was accepted")
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}
