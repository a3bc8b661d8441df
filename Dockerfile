# Multi-stage build of the one millrace binary: static, non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/millrace ./cmd/millrace

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/millrace /usr/local/bin/millrace
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/millrace"]
