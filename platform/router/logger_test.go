package router_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/millrace/millrace/platform/router"
)

func TestWatermillLoggerKeepsLevelsAndFields(t *testing.T) {
	cases := []struct {
		name  string
		level slog.Level
		// want lists the messages recorded, in order.
		want []string
	}{
		{"info: errors only (watermill's info is debug)", slog.LevelInfo, []string{"error"}},
		{"debug: all but trace", slog.LevelDebug, []string{"error", "info", "debug"}},
		{"trace: everything", watermill.LevelTrace, []string{"error", "info", "debug", "trace"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := router.NewWatermillLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))).
				With(watermill.LogFields{"handler": "orders"})
			fields := watermill.LogFields{"message_uuid": "m-1"}
			l.Error("error", errors.New("boom"), fields)
			l.Info("info", fields)
			l.Debug("debug", fields)
			l.Trace("trace", fields)

			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if buf.Len() == 0 {
				lines = nil
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("recorded %d records, want %d (%v):\n%s", len(lines), len(tc.want), tc.want, buf.String())
			}
			for i, line := range lines {
				for _, part := range []string{"msg=" + tc.want[i], "handler=orders", "message_uuid=m-1"} {
					if !strings.Contains(line, part) {
						t.Errorf("record %d %q lacks %q", i, line, part)
					}
				}
			}
			if tc.level <= slog.LevelDebug && !strings.Contains(lines[1], "level=DEBUG") {
				t.Errorf("watermill's info recorded as %q, want level DEBUG", lines[1])
			}
		})
	}
}
