package buildinfo

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"
)

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReleaseVersionAgrees: the newest release of CHANGELOG.md is the
// version the Dockerfile stamps by default and the node image tag that
// docker-compose.yml and the Kubernetes manifests run (never latest).
func TestReleaseVersionAgrees(t *testing.T) {
	m := regexp.MustCompile(`(?m)^## (v\d+\.\d+\.\d+)\b`).FindStringSubmatch(repoFile(t, "CHANGELOG.md"))
	if m == nil {
		t.Fatal("CHANGELOG.md has no release section (## vX.Y.Z)")
	}
	release := m[1]
	tests := []struct {
		file, pattern string
		min           int
	}{
		{"Dockerfile", `(?m)^ARG VERSION=(\S+)$`, 2},
		{"docker-compose.yml", `(?m)^\s+image: bayeux-node:(\S+)`, 3},
		{"deploy/k8s/node-deployment.yaml", `(?m)^\s+image: bayeux-node:(\S+)`, 1},
	}
	for _, tt := range tests {
		found := regexp.MustCompile(tt.pattern).FindAllStringSubmatch(repoFile(t, tt.file), -1)
		if len(found) < tt.min {
			t.Errorf("%s: %d matches of %s, want %d", tt.file, len(found), tt.pattern, tt.min)
		}
		for _, f := range found {
			if f[1] != release {
				t.Errorf("%s: %q, want the release %s (CHANGELOG.md)", tt.file, f[0], release)
			}
		}
	}
}
