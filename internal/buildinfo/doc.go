// Package buildinfo tells which build of the node is running: its
// version, VCS revision and Go version, for --version and the
// bayeux_build_info metric.
//
// A release build stamps the version and revision with the linker
// (the Dockerfile does, from its VERSION and REVISION build arguments):
//
//	go build -ldflags "-X github.com/bayeux-cluster/bayeux/internal/buildinfo.version=v0.1.0 \
//	  -X github.com/bayeux-cluster/bayeux/internal/buildinfo.revision=$(git rev-parse HEAD)" ./cmd/node
//
// Without them, Read falls back to what the Go toolchain records in the
// binary (runtime/debug.ReadBuildInfo): the module version of a tagged
// checkout and the vcs.revision of a git checkout (with "-dirty" when it
// had uncommitted changes); "(devel)" and "unknown" when neither is known.
package buildinfo
