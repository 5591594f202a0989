package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := func(rev, modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	tests := []struct {
		name                string
		stampedV, stampedR  string
		bi                  *debug.BuildInfo
		wantV, wantR, wantG string
	}{
		{"linker stamps win", "v0.1.0", "abc", vcs("def", "false"), "v0.1.0", "abc", "go1.26.0"},
		{"git checkout", "", "", vcs("def", "false"), "(devel)", "def", "go1.26.0"},
		{"modified checkout", "", "", vcs("def", "true"), "(devel)", "def-dirty", "go1.26.0"},
		{"tagged module", "", "", &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v0.2.0"}}, "v0.2.0", "unknown", "go1.26.1"},
		{"nothing known", "", "", &debug.BuildInfo{}, "(devel)", "unknown", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fromBuildInfo(tt.stampedV, tt.stampedR, tt.bi)
			if got.Version != tt.wantV || got.Revision != tt.wantR || (tt.wantG != "" && got.GoVersion != tt.wantG) || got.GoVersion == "" {
				t.Fatalf("got %+v, want %s %s %s", got, tt.wantV, tt.wantR, tt.wantG)
			}
		})
	}
}
