package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/projections"
)

func newProjectionsCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		adminURL string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "projections [NAME]",
		Short: "Show each projection: version serving reads, state, lag, rebuild and last error",
		Long: `projections shows, for each projection of the running millrace process, the version that
serves reads, its state (live, rebuilding or failed), how many messages it has still to
handle (lag), the rebuild under way or the last one, and its last error. With a NAME it
also shows its position on every partition.

It talks to the admin API of the running millrace process (--admin-url, MILLRACE_ADMIN_URL),
with the credential in MILLRACE_TOKEN when authentication is on (scope admin).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			var list []projections.Status
			if len(args) == 1 {
				var s projections.Status
				if err := c.do(cmd.Context(), http.MethodGet, "/admin/projections/"+args[0], nil, &s); err != nil {
					return fmt.Errorf("read projection %s: %w", args[0], err)
				}
				list = []projections.Status{s}
			} else {
				var all projections.List
				if err := c.do(cmd.Context(), http.MethodGet, "/admin/projections", nil, &all); err != nil {
					return fmt.Errorf("list projections: %w", err)
				}
				list = all.Projections
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if len(args) == 1 {
					return enc.Encode(list[0])
				}
				return enc.Encode(projections.List{Projections: list})
			}
			return writeProjections(stdout, list, len(args) == 1)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the admin API's JSON instead of a table")
	bindAdminURL(cmd, &adminURL, getenv)
	return cmd
}

// writeProjections writes statuses as an aligned table; withPartitions adds
// one table of positions per projection.
func writeProjections(w io.Writer, list []projections.Status, withPartitions bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tVERSION\tSTATE\tLAG\tREBUILD\tLAST ERROR")
	for _, s := range list {
		lag := strconv.FormatInt(s.Lag, 10)
		if s.Lag < 0 {
			lag = "?"
		}
		lastErr := "-"
		if s.LastError != "" {
			lastErr = s.LastError
			if s.LastErrorAt != nil {
				lastErr = s.LastErrorAt.Format(time.RFC3339) + " " + lastErr
			}
		}
		fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%s\n", s.Name, s.Version, s.State, lag, describeRebuild(s.Rebuild), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write projections: %w", err)
	}
	if !withPartitions {
		return nil
	}
	for _, s := range list {
		fmt.Fprintf(w, "\n%s v%d positions:\n", s.Name, s.Version)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET\tEND\tLAG")
		for _, p := range s.Positions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Topic, p.Partition, p.Offset, p.End, p.Lag)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write positions: %w", err)
		}
	}
	return nil
}

// describeRebuild sums a rebuild up in one cell.
func describeRebuild(rb *projections.RebuildStatus) string {
	if rb == nil {
		return "-"
	}
	switch rb.State {
	case projections.RebuildPreparing, projections.RebuildBuilding:
		parts := []string{fmt.Sprintf("v%d %s %d/%d", rb.Version, rb.State, rb.Applied, rb.Total)}
		if rb.Total > 0 {
			parts[0] += fmt.Sprintf(" (%.0f%%)", 100*float64(rb.Applied)/float64(rb.Total))
		}
		if rb.Rate > 0 {
			parts = append(parts, fmt.Sprintf("%.0f/s", rb.Rate), "ETA "+time.Duration(rb.ETASeconds*float64(time.Second)).Round(time.Second).String())
		}
		if rb.Phase != "" {
			parts = append(parts, rb.Phase)
		}
		if rb.Error != "" {
			parts = append(parts, "error: "+rb.Error)
		}
		return strings.Join(parts, ", ")
	default:
		when := rb.StartedAt
		if rb.FinishedAt != nil {
			when = *rb.FinishedAt
		}
		out := fmt.Sprintf("v%d %s %s", rb.Version, rb.State, when.Format(time.RFC3339))
		if rb.Error != "" {
			out += " (" + rb.Error + ")"
		}
		return out
	}
}
