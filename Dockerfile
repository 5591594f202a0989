# syntax=docker/dockerfile:1

# Build stage: a static (CGO-free) node binary.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/node ./cmd/node

# Final stage: no shell, no package manager, non-root.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/node /node
USER nonroot
# HTTP (Bayeux), gossip (memberlist, TCP and UDP), node-to-node gRPC.
EXPOSE 8080 7946/tcp 7946/udp 7947
ENTRYPOINT ["/node"]
