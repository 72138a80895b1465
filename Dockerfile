# syntax=docker/dockerfile:1
# herd's container image: a static binary on distroless, running as non-root
# with no shell. Build with `make image` (needs a Docker engine), which passes
# the same version information as `make build`.

# Build on the build host's platform and cross-compile: CGO is off, so Go
# needs no target toolchain.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# Version information for github.com/prometheus/common/version, as the
# Makefile's LDFLAGS set it (`herd version`, herd_build_info).
ARG VERSION=devel
ARG REVISION=unknown
ARG BRANCH=unknown
ARG BUILD_USER=docker
ARG BUILD_DATE=unknown
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH} \
        -X github.com/prometheus/common/version.BuildUser=${BUILD_USER} \
        -X github.com/prometheus/common/version.BuildDate=${BUILD_DATE}" \
      -o /out/herd ./cmd/herd

# distroless/static: CA certificates, tzdata and /etc/passwd, nothing else: no
# shell, no package manager. The nonroot tag runs as UID/GID 65532.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=devel
ARG REVISION=unknown
# CREATED is the build time in RFC 3339, as OCI wants it (BUILD_DATE has the
# format herd's version output uses).
ARG CREATED
LABEL org.opencontainers.image.title="herd" \
      org.opencontainers.image.description="Watches the node-side clients of a Kubernetes control plane (kubelet, kube-proxy, CNI agents) and calms them when they stampede." \
      org.opencontainers.image.source="https://github.com/herd-k8s/herd" \
      org.opencontainers.image.url="https://github.com/herd-k8s/herd" \
      org.opencontainers.image.documentation="https://github.com/herd-k8s/herd/blob/main/README.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/herd /herd
USER 65532:65532
# 10380: exporter /metrics and debug pages; 10381: exporter audit ingest
# (POST /audit); 10382: responder webhook, /metrics and debug pages.
EXPOSE 10380 10381 10382
ENTRYPOINT ["/herd"]
