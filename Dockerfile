# The watchdog image: what a function image copies the watchdog from, as from the Go watchdog images:
#   FROM --platform=${TARGETPLATFORM:-linux/amd64} <this image> AS watchdog
#   COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog
# It holds the static binary of `make dist` and nothing else. `make image` builds it for this
# machine; `docker buildx build --platform linux/amd64,linux/arm64 ...` builds both from one
# `make dist` (docs/operations.md, "Building and publishing the watchdog image").
FROM scratch
# Set by BuildKit for each platform; `make image` passes it to the legacy builder, which does not.
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="fwatchdog" \
      org.opencontainers.image.description="Turns any UNIX program into an HTTP function: a drop-in replacement for the OpenFaaS watchdogs" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
COPY dist/fwatchdog-${TARGETARCH} /fwatchdog
ENTRYPOINT ["/fwatchdog"]
