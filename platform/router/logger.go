package router

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// NewWatermillLogger adapts logger for Watermill's router and pub/subs, as
// watermill.NewSlogLoggerWithLevelMapping does, with Watermill's Info
// mapped to Debug (Watermill reports routine starts and stops at Info). It
// drops a record before converting its fields when logger would drop it
// anyway: Watermill logs at its Trace level for every message it routes
// and every message a Kafka subscriber receives, and watermill's own adapter
// converts the fields of each before slog looks at the level.
func NewWatermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return watermillLogger{
		logger: logger,
		next:   watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
	}
}

// watermillLogger asks logger whether a level is on before next converts
// anything.
type watermillLogger struct {
	logger *slog.Logger
	next   watermill.LoggerAdapter
}

func (l watermillLogger) on(level slog.Level) bool {
	return l.logger.Enabled(context.Background(), level)
}

func (l watermillLogger) Error(msg string, err error, fields watermill.LogFields) {
	if l.on(slog.LevelError) {
		l.next.Error(msg, err, fields)
	}
}

func (l watermillLogger) Info(msg string, fields watermill.LogFields) {
	if l.on(slog.LevelDebug) { // mapped to Debug
		l.next.Info(msg, fields)
	}
}

func (l watermillLogger) Debug(msg string, fields watermill.LogFields) {
	if l.on(slog.LevelDebug) {
		l.next.Debug(msg, fields)
	}
}

func (l watermillLogger) Trace(msg string, fields watermill.LogFields) {
	if l.on(watermill.LevelTrace) {
		l.next.Trace(msg, fields)
	}
}

func (l watermillLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return watermillLogger{logger: l.logger, next: l.next.With(fields)}
}
