# The one millrace image: every role (gateway, worker, projector, scheduler)
# and millrace dev run from it (compose.yaml). Multi-stage: the binary is
# built static (no cgo: SQLite is modernc.org/sqlite, pure Go) and copied
# into a distroless image with nothing else in it, run as a non-root user.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/millrace ./cmd/millrace
# The data directory, owned by the image's non-root user: a named volume
# mounted on it starts with this owner, so the roles can write their SQLite
# files there.
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/millrace /usr/local/bin/millrace
COPY --from=build --chown=65532:65532 /out/data /data
USER nonroot:nonroot
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/millrace"]
