// Package router builds the Watermill router every millrace process runs its
// handlers and projections on, with the default middleware stack applied to
// every handler: a poison queue for what cannot be processed, retries with
// exponential backoff and jitter for transient failures, and a recoverer that
// turns a panic into an error instead of a crashed process.
//
// Permanent failures (a payload that does not decode, an unknown version) are
// not retried: they go to the poison queue at once, with the reason.
package router

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// DefaultPoisonTopic is where messages that could not be processed are parked.
const DefaultPoisonTopic = "millrace.poison"

// Config tunes the default middleware stack.
type Config struct {
	// PoisonTopic receives messages that failed permanently or ran out of retries.
	PoisonTopic string
	// MaxRetries is how often a failing message is retried before it is poisoned.
	MaxRetries int
	// InitialInterval is the first backoff; each retry doubles it up to MaxInterval.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxElapsed bounds the total time spent retrying one message.
	MaxElapsed time.Duration
	// CloseTimeout bounds how long Close waits for in-flight messages.
	CloseTimeout time.Duration
	// IsPermanent reports errors that retrying cannot fix; nil means none are.
	IsPermanent func(error) bool
}

func (c *Config) setDefaults() {
	if c.PoisonTopic == "" {
		c.PoisonTopic = DefaultPoisonTopic
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.InitialInterval == 0 {
		c.InitialInterval = 100 * time.Millisecond
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = 5 * time.Second
	}
	if c.MaxElapsed == 0 {
		c.MaxElapsed = time.Minute
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 30 * time.Second
	}
	if c.IsPermanent == nil {
		c.IsPermanent = func(error) bool { return false }
	}
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("max retries %d: must not be negative", c.MaxRetries))
	}
	if c.InitialInterval < 0 || c.MaxInterval < 0 || c.MaxElapsed < 0 {
		errs = append(errs, errors.New("retry intervals must not be negative"))
	}
	if c.MaxInterval > 0 && c.InitialInterval > c.MaxInterval {
		errs = append(errs, fmt.Errorf("initial interval %s exceeds max interval %s", c.InitialInterval, c.MaxInterval))
	}
	return errors.Join(errs...)
}

// New returns a router with the default middleware stack. poison publishes
// to the poison topic. The caller runs the router (Run) and closes it
// (Close); closing drains in-flight messages for up to CloseTimeout.
func New(cfg Config, poison message.Publisher, logger *slog.Logger) (*message.Router, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, wlog)
	if err != nil {
		return nil, fmt.Errorf("create router: %w", err)
	}
	pq, err := middleware.PoisonQueue(poison, cfg.PoisonTopic)
	if err != nil {
		return nil, fmt.Errorf("create poison queue middleware: %w", err)
	}
	retry := middleware.Retry{
		MaxRetries:          cfg.MaxRetries,
		InitialInterval:     cfg.InitialInterval,
		MaxInterval:         cfg.MaxInterval,
		Multiplier:          2,
		MaxElapsedTime:      cfg.MaxElapsed,
		RandomizationFactor: 0.5,
		ResetContextOnRetry: true,
		ShouldRetry:         func(p middleware.RetryParams) bool { return !cfg.IsPermanent(p.Err) },
		Logger:              wlog,
	}
	// The first middleware added is the outermost: a panic is recovered into
	// an error, retried if transient, and poisoned when retries are spent.
	r.AddMiddleware(pq, retry.Middleware, middleware.Recoverer)
	return r, nil
}
