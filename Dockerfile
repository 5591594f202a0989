# syntax=docker/dockerfile:1

# Build stage: a static (CGO-free) node binary, bayeux-node, stamped with
# its version and revision (--version, bayeux_build_info). A release is
# built and tagged with the same version:
#   docker build --build-arg VERSION=v0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t bayeux-node:v0.1.0 .
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# VERSION defaults to the release this tree describes (CHANGELOG.md);
# REVISION is the git commit (the build context has no .git).
ARG VERSION=v0.1.0
ARG REVISION=unknown
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w -X github.com/bayeux-cluster/bayeux/internal/buildinfo.version=${VERSION} -X github.com/bayeux-cluster/bayeux/internal/buildinfo.revision=${REVISION}" \
    -o /out/bayeux-node ./cmd/node

# Final stage: no shell, no package manager, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=v0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bayeux-node" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/bayeux-node /bayeux-node
USER nonroot
# HTTP (Bayeux), gossip (memberlist, TCP and UDP), node-to-node gRPC.
EXPOSE 8080 8081 7946/tcp 7946/udp 7947
ENTRYPOINT ["/bayeux-node"]
