package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/millrace/millrace/platform/adminapi"
	"github.com/millrace/millrace/projections"
)

// adminClient talks to the admin API of a running millrace process.
type adminClient struct {
	base string
	http *http.Client
}

// newAdminClient returns a client of the admin API at base; it sends the
// credential in MILLRACE_TOKEN when authentication is on (adminHTTPClient).
func newAdminClient(base string, getenv func(string) string) (*adminClient, error) {
	base = strings.TrimRight(base, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("admin url %q: want http://host:port", base)
	}
	return &adminClient{base: base, http: adminHTTPClient(getenv)}, nil
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out; a problem answer becomes an error with its detail.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	return adminapi.Client{HTTP: c.http, Base: c.base, Unreachable: "is millrace dev running? see --admin-url"}.Do(ctx, method, path, body, out)
}

// bindAdminURL registers --admin-url.
func bindAdminURL(cmd *cobra.Command, url *string, getenv func(string) string) {
	cmd.Flags().StringVar(url, "admin-url", envOr(getenv, "MILLRACE_ADMIN_URL", defaultAdminURL),
		"base URL of the millrace admin API (MILLRACE_ADMIN_URL)")
}

// isTerminal reports whether w is a terminal, where a progress bar can redraw.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newReplayCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		adminURL, name, fromTime, fromOffsets string
		cancel, detach                        bool
		interval                              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay --projection NAME [--from-time T | --from-offsets topic:partition=offset,...]",
		Short: "Rebuild a projection from the log into a new version, live, and swap it in",
		Long: `replay builds the next version of a projection from the log, into tables of its own and
in consumer groups of its own (projection.<name>.v<N>.<topic>), while the current version keeps
serving reads. Once the new version has caught up with the live head, it is swapped in
atomically and the old version retired: its tables dropped, its consumer groups deleted.

Progress (events applied of total, rate, time left) is shown as a bar in a terminal and as
plain lines otherwise, until the swap is done; --detach returns at once. A rebuild that a
crash interrupts resumes from its own checkpoint when millrace starts again; a second rebuild
of the same projection is refused while one is under way. --cancel drops a rebuild that has
not been swapped in.

It talks to the admin API of the running millrace process (--admin-url, MILLRACE_ADMIN_URL),
with the credential in MILLRACE_TOKEN when authentication is on (scope admin).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("name the projection to rebuild with --projection (millrace projections lists them)")
			}
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			path := "/admin/projections/" + name + "/rebuild"
			if cancel {
				var s projections.Status
				if err := c.do(ctx, http.MethodDelete, path, nil, &s); err != nil {
					return fmt.Errorf("cancel rebuild of %s: %w", name, err)
				}
				fmt.Fprintf(stdout, "%s: rebuild of version %d cancelled; version %d still serves\n", name, s.Rebuild.Version, s.Version)
				return nil
			}
			req, err := rebuildRequest(fromTime, fromOffsets)
			if err != nil {
				return err
			}
			var s projections.Status
			if err := c.do(ctx, http.MethodPost, path, req, &s); err != nil {
				return fmt.Errorf("rebuild %s: %w", name, err)
			}
			fmt.Fprintf(stdout, "%s: building version %d from the %s beside version %d, which keeps serving; %d events to apply\n",
				name, s.Rebuild.Version, s.Rebuild.From, s.Rebuild.Replaces, s.Rebuild.Total)
			if detach {
				fmt.Fprintf(stdout, "follow it with: millrace projections\n")
				return nil
			}
			return followRebuild(ctx, c, name, s.Rebuild.Version, interval, stdout)
		},
	}
	cmd.Flags().StringVar(&name, "projection", "", "projection to rebuild (required)")
	cmd.Flags().StringVar(&fromTime, "from-time", "", "start at the first event at or after this time (RFC 3339) instead of the start of the log")
	cmd.Flags().StringVar(&fromOffsets, "from-offsets", "", "start partitions at offsets: topic:partition=offset,... (others from the start of the log)")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "cancel the rebuild under way instead of starting one")
	cmd.Flags().BoolVar(&detach, "detach", false, "return once the rebuild started instead of following it")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often to read progress")
	bindAdminURL(cmd, &adminURL, getenv)
	return cmd
}

// rebuildRequest builds the body of a rebuild from the flags.
func rebuildRequest(fromTime, fromOffsets string) (projections.RebuildRequest, error) {
	var req projections.RebuildRequest
	if fromTime != "" && fromOffsets != "" {
		return req, errors.New("give --from-time or --from-offsets, not both")
	}
	if fromTime != "" {
		t, err := time.Parse(time.RFC3339Nano, fromTime)
		if err != nil {
			return req, fmt.Errorf("--from-time %q: want RFC 3339, e.g. 2025-01-31T00:00:00Z", fromTime)
		}
		req.FromTime = &t
	}
	for _, item := range splitList(fromOffsets) {
		tp, o, ok := strings.Cut(item, "=")
		topic, p, ok2 := strings.Cut(tp, ":")
		part, perr := strconv.ParseInt(p, 10, 32)
		off, oerr := strconv.ParseInt(o, 10, 64)
		if !ok || !ok2 || topic == "" || perr != nil || oerr != nil {
			return req, fmt.Errorf("--from-offsets %q: want topic:partition=offset, e.g. orders.events:0=120", item)
		}
		req.FromOffsets = append(req.FromOffsets, projections.Position{Topic: topic, Partition: int32(part), Offset: off})
	}
	return req, nil
}

// followRebuild shows the progress of a rebuild until it is done.
func followRebuild(ctx context.Context, c *adminClient, name string, version int, interval time.Duration, w io.Writer) error {
	var bar *progressbar.ProgressBar
	if isTerminal(w) {
		bar = progressbar.NewOptions64(1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(fmt.Sprintf("%s v%d", name, version)),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("events"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetWidth(30),
		)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastLine := time.Time{}
	for {
		var s projections.Status
		if err := c.do(ctx, http.MethodGet, "/admin/projections/"+name, nil, &s); err != nil {
			return fmt.Errorf("follow rebuild of %s: %w", name, err)
		}
		rb := s.Rebuild
		if rb == nil || rb.Version != version {
			return fmt.Errorf("follow rebuild of %s: version %d is no longer the rebuild under way", name, version)
		}
		switch rb.State {
		case projections.RebuildPreparing, projections.RebuildBuilding:
			if bar != nil {
				bar.ChangeMax64(max(rb.Total, 1))
				_ = bar.Set64(rb.Applied)
				if rb.Phase != "" {
					bar.Describe(fmt.Sprintf("%s v%d %s", name, version, rb.Phase))
				}
			} else if time.Since(lastLine) >= 2*time.Second || rb.Phase != "" {
				fmt.Fprintln(w, progressLine(name, rb))
				lastLine = time.Now()
			}
		case projections.RebuildRetiring:
			if bar != nil {
				_ = bar.Set64(rb.Total)
			}
		case projections.RebuildDone:
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(w)
			}
			took := ""
			if rb.FinishedAt != nil {
				took = fmt.Sprintf(" in %s", rb.FinishedAt.Sub(rb.StartedAt).Round(time.Millisecond))
			}
			fmt.Fprintf(w, "%s: version %d is live%s; version %d retired (tables dropped, consumer groups deleted)\n",
				name, rb.Version, took, rb.Replaces)
			if rb.Error != "" {
				fmt.Fprintf(w, "note: %s\n", rb.Error)
			}
			return nil
		default:
			if bar != nil {
				fmt.Fprintln(w)
			}
			return fmt.Errorf("rebuild of %s version %d %s: %s", name, rb.Version, rb.State, rb.Error)
		}
		select {
		case <-ctx.Done():
			if bar != nil {
				fmt.Fprintln(w)
			}
			fmt.Fprintf(w, "stopped following; the rebuild goes on (millrace projections shows it)\n")
			return nil
		case <-tick.C:
		}
	}
}

// progressLine describes a rebuild's progress in one plain line.
func progressLine(name string, rb *projections.RebuildStatus) string {
	pct := 0.0
	if rb.Total > 0 {
		pct = 100 * float64(rb.Applied) / float64(rb.Total)
	}
	line := fmt.Sprintf("%s v%d %s: %d/%d events (%.1f%%)", name, rb.Version, rb.State, rb.Applied, rb.Total, pct)
	if rb.Rate > 0 {
		line += fmt.Sprintf(", %.0f events/s, ETA %s", rb.Rate, (time.Duration(rb.ETASeconds * float64(time.Second))).Round(time.Second))
	}
	if rb.Phase != "" {
		line += ", " + rb.Phase
	}
	if rb.Error != "" {
		line += ", error: " + rb.Error
	}
	return line
}

func newResetCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var adminURL, handler, toTime, toOffset string
	cmd := &cobra.Command{
		Use:   "reset --handler NAME (--to-time T | --to-offset earliest|latest|N|partition=offset,...)",
		Short: "Move a handler's consumer group to a time or an offset, and say what will be redelivered",
		Long: `reset stops a handler (a command handler or a reactor, not a projection: rebuild those with
millrace replay), moves its consumer group to a time or an offset, starts it again and
reports, per partition, where it was, where it now starts and how many messages it will be
handed again. Redelivered messages are marked as replays: reactors record them but do not
act on them again (no notification is sent twice).

Without --handler it lists the handlers. It talks to the admin API of the running millrace
process (--admin-url, MILLRACE_ADMIN_URL), with the credential in MILLRACE_TOKEN when
authentication is on (scope admin).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if handler == "" {
				var list struct {
					Handlers []handlerInfo `json:"handlers"`
				}
				if err := c.do(ctx, http.MethodGet, "/admin/handlers", nil, &list); err != nil {
					return fmt.Errorf("list handlers: %w", err)
				}
				tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HANDLER\tTOPIC\tRUNNING")
				for _, h := range list.Handlers {
					fmt.Fprintf(tw, "%s\t%s\t%v\n", h.Name, h.Topic, h.Running)
				}
				return tw.Flush()
			}
			if toTime == "" && toOffset == "" {
				return errors.New("say where to reset to: --to-time 2025-01-31T12:00:00Z or --to-offset earliest|latest|N|partition=offset,...")
			}
			if _, err := parseResetTarget(toTime, toOffset); err != nil {
				return err
			}
			var res handlerReset
			if err := c.do(ctx, http.MethodPost, "/admin/handlers/"+handler+"/reset", resetRequest{ToTime: toTime, ToOffset: toOffset}, &res); err != nil {
				return fmt.Errorf("reset %s: %w", handler, err)
			}
			fmt.Fprintf(stdout, "%s reset to %s on %s: %d messages will be delivered again (as replays), %d skipped\n",
				res.Handler, res.Target, res.Topic, res.Redelivered, res.Skipped)
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARTITION\tFROM\tTO\tREDELIVERED\tSKIPPED")
			for _, p := range res.Partitions {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\n", p.Partition, p.From, p.To, p.Redelivered, p.Skipped)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&handler, "handler", "", "handler to reset, e.g. notifications.orders.events (none: list them)")
	cmd.Flags().StringVar(&toTime, "to-time", "", "reset to the first message at or after this time (RFC 3339)")
	cmd.Flags().StringVar(&toOffset, "to-offset", "", "reset to earliest, latest, an offset for every partition, or partition=offset,...")
	bindAdminURL(cmd, &adminURL, getenv)
	return cmd
}
