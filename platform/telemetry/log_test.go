package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/millrace/millrace/platform/telemetry"
)

func TestLogHandler(t *testing.T) {
	_, tp := recorder(t)
	spanCtx, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	sc := span.SpanContext()

	cases := []struct {
		name      string
		ctx       context.Context
		log       func(l *slog.Logger, ctx context.Context)
		wantTrace bool
		wantPath  []string // where trace_id is, inside groups
	}{
		{name: "span in context", ctx: spanCtx, wantTrace: true,
			log: func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "applied", "handler", "orders") }},
		{name: "no span", ctx: context.Background(),
			log: func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "applied") }},
		{name: "attributes added with With keep the ids", ctx: spanCtx, wantTrace: true,
			log: func(l *slog.Logger, ctx context.Context) { l.With("component", "relay").InfoContext(ctx, "published") }},
		{name: "inside a group", ctx: spanCtx, wantTrace: true, wantPath: []string{"request"},
			log: func(l *slog.Logger, ctx context.Context) { l.WithGroup("request").InfoContext(ctx, "served") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, nil)))
			tc.log(logger, tc.ctx)
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("decode log line %q: %v", buf.String(), err)
			}
			for _, g := range tc.wantPath {
				inner, _ := rec[g].(map[string]any)
				rec = inner
			}
			gotTrace, _ := rec["trace_id"].(string)
			gotSpan, _ := rec["span_id"].(string)
			if tc.wantTrace {
				if gotTrace != sc.TraceID().String() || gotSpan != sc.SpanID().String() {
					t.Errorf("trace_id %q span_id %q, want %s %s in %s", gotTrace, gotSpan, sc.TraceID(), sc.SpanID(), buf.String())
				}
			} else if gotTrace != "" || gotSpan != "" {
				t.Errorf("ids logged without a span: %s", buf.String())
			}
		})
	}
}

func TestLogHandlerKeepsLevel(t *testing.T) {
	var buf bytes.Buffer
	h := telemetry.NewLogHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if h.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("info is enabled under a warn handler")
	}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.SpanContext{})
	slog.New(h).InfoContext(ctx, "dropped")
	if buf.Len() != 0 {
		t.Errorf("an info record was written: %s", buf.String())
	}
}
