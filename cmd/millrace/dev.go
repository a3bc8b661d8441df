package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/millrace/millrace/platform/kafka"
)

func newDevCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var cfg devConfig
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process: embedded broker, SQLite stores, gateway",
		Long: `dev runs every part of millrace in one process on this machine: a Kafka-protocol broker
persisted under the data directory (or an external cluster given by KAFKA_BROKERS), the
users and orders command handlers with their SQLite stores and outbox relay, the
notifications reactor, the projections, and the HTTP gateway.

Stop it with Ctrl-C (SIGINT) or SIGTERM: in-flight work drains, the outbox is flushed,
and a later start resumes where it stopped, with nothing lost and nothing applied twice.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.setDefaults()
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			logger, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
			if err != nil {
				return fmt.Errorf("configuration: %w", err)
			}
			return runDev(cmd.Context(), cfg, logger, stdout)
		},
	}
	bindDevFlags(cmd.Flags(), &cfg, getenv)
	return cmd
}

// runDev builds the platform, serves until ctx is cancelled, then shuts
// down in reverse order of construction.
func runDev(ctx context.Context, cfg devConfig, logger *slog.Logger, stdout io.Writer) (err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data directory %s: %w", cfg.DataDir, err)
	}

	// Teardown runs in reverse order of construction, whatever happens.
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if cerr := closers[i](); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()

	brokers := cfg.KafkaBrokers
	brokerDesc := "external " + strings.Join(brokers, ",")
	if len(brokers) == 0 {
		broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{
			Addr:       cfg.KafkaAddr,
			DataDir:    cfg.path("kafka"),
			Partitions: cfg.Partitions,
		})
		if err != nil {
			return fmt.Errorf("start embedded broker: %w", err)
		}
		closers = append(closers, broker.Close)
		brokers = broker.Addrs()
		brokerDesc = "embedded " + strings.Join(brokers, ",") + " (data in " + cfg.path("kafka") + ")"
	}

	p, err := buildPlatform(ctx, cfg, brokers, logger)
	if err != nil {
		return err
	}
	closers = append(closers, p.Close)

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           p.HTTPHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-p.Ready():
		}
		base := "http://" + ln.Addr().String()
		fmt.Fprintf(stdout, "millrace dev is ready\n")
		fmt.Fprintf(stdout, "  gateway   %s/v1/\n", base)
		fmt.Fprintf(stdout, "  health    %s/healthz\n", base)
		fmt.Fprintf(stdout, "  kafka     %s\n", brokerDesc)
		fmt.Fprintf(stdout, "  data      %s\n", cfg.DataDir)
		fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n")
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// Stop taking requests first, then let the platform drain.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			return fmt.Errorf("shut down http server: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}
