package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker (-ldflags -X); empty otherwise. Never written at run
// time.
var (
	version  string
	revision string
)

// Info identifies a build.
type Info struct {
	Version   string // release version (v0.1.0), a Go pseudo-version, or "(devel)"
	Revision  string // VCS commit, "-dirty" appended for a modified tree, or "unknown"
	GoVersion string // the Go release that built the binary (go1.26.0)
}

// Read returns the build's identity: the linker-stamped values first, then
// the toolchain's build information.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(version, revision, bi)
}

func fromBuildInfo(stampedVersion, stampedRevision string, bi *debug.BuildInfo) Info {
	info := Info{Version: stampedVersion, Revision: stampedRevision, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if info.Version == "" && bi.Main.Version != "" {
			info.Version = bi.Main.Version
		}
		if info.Revision == "" {
			info.Revision = vcsRevision(bi.Settings)
		}
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	if info.Revision == "" {
		info.Revision = "unknown"
	}
	return info
}

func vcsRevision(settings []debug.BuildSetting) string {
	rev, dirty := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// String is the one-line form printed by --version.
func (i Info) String() string {
	return "bayeux-node " + i.Version + " (revision " + i.Revision + ", " + i.GoVersion + ")"
}
