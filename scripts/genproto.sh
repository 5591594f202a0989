#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC code under api/proto.
# Needs protoc (apt-get install protobuf-compiler) and the pinned plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
protoc --proto_path=api/proto \
  --go_out=api/proto --go_opt=paths=source_relative \
  --go-grpc_out=api/proto --go-grpc_opt=paths=source_relative \
  cluster/v1/cluster.proto server/v1/server.proto
