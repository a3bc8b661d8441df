package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/platform/scheduler"
)

func newJobsCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		adminURL string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List scheduled jobs, show their run history, trigger one by hand",
		Long: `jobs talks to the scheduler's admin API of a running millrace process (--admin-url,
MILLRACE_ADMIN_URL; any instance answers, whichever leads), with the credential in
MILLRACE_TOKEN when authentication is on (scope admin). Jobs are declared in the jobs section
of the rules (--config and the other layers) and change while millrace runs. See
docs/scheduling.md.`,
	}
	enc := func(v any) error {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(v)
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the jobs: schedule, command, next firing, last run, runs open",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			var l scheduler.JobList
			if err := c.do(cmd.Context(), http.MethodGet, "/admin/jobs", nil, &l); err != nil {
				return fmt.Errorf("list jobs: %w", err)
			}
			if asJSON {
				return enc(l)
			}
			return writeJobs(stdout, l)
		},
	}

	var limit int
	history := &cobra.Command{
		Use:   "history NAME",
		Short: "Show a job's latest runs: scheduled and actual time, lateness, outcome, duration",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			var page scheduler.HistoryPage
			path := "/admin/jobs/" + url.PathEscape(args[0]) + "/history?limit=" + strconv.Itoa(limit)
			if err := c.do(cmd.Context(), http.MethodGet, path, nil, &page); err != nil {
				return fmt.Errorf("read the history of job %s: %w", args[0], err)
			}
			if asJSON {
				return enc(page)
			}
			return writeRuns(stdout, page.Runs)
		},
	}
	history.Flags().IntVar(&limit, "limit", 20, "how many runs, newest first (1 to 1000)")

	var wait time.Duration
	trigger := &cobra.Command{
		Use:   "trigger NAME",
		Short: "Run a job now, whatever its schedule (also a disabled one), and wait for its outcome",
		Long: `trigger asks the scheduler for a run of the job now. Whichever instance leads fires it within a
second, subject to the job's block strategy; the run is recorded with trigger "manual". It waits
up to --wait for the run to finish and prints it (--wait 0s returns at once).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAdminClient(adminURL, getenv)
			if err != nil {
				return err
			}
			if wait > 0 {
				c.http.Timeout = wait + 30*time.Second
			}
			var ans scheduler.TriggerAnswer
			path := "/admin/jobs/" + url.PathEscape(args[0]) + "/trigger?wait=" + wait.String()
			if err := c.do(cmd.Context(), http.MethodPost, path, nil, &ans); err != nil {
				return fmt.Errorf("trigger job %s: %w", args[0], err)
			}
			if asJSON {
				return enc(ans)
			}
			fmt.Fprintf(stdout, "triggered %s: run %s (request %s)\n", ans.Job, ans.RunID, ans.RequestID)
			switch {
			case ans.Run == nil && wait > 0:
				fmt.Fprintf(stdout, "not fired within %s; see millrace jobs history %s\n", wait, ans.Job)
			case ans.Run != nil && ans.Run.Outcome == scheduler.RunRunning:
				fmt.Fprintf(stdout, "still running after %s (attempt %d); see millrace jobs history %s\n", wait, ans.Run.Attempts, ans.Job)
			case ans.Run != nil:
				return writeRuns(stdout, []scheduler.Run{*ans.Run})
			}
			return nil
		},
	}
	trigger.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the run's outcome; 0s returns at once")

	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print the admin API's JSON instead of a table")
	cmd.PersistentFlags().StringVar(&adminURL, "admin-url", envOr(getenv, "MILLRACE_ADMIN_URL", defaultAdminURL),
		"base URL of the millrace admin API (MILLRACE_ADMIN_URL)")
	cmd.AddCommand(list, history, trigger)
	return cmd
}

// writeJobs writes the job list as an aligned table.
func writeJobs(w io.Writer, l scheduler.JobList) error {
	who := "follows"
	if l.Leading {
		who = "leads"
	}
	fmt.Fprintf(w, "scheduler %s (%s)\n", l.Instance, who)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tCOMMAND\tENABLED\tNEXT\tLAST RUN\tOPEN")
	for _, j := range l.Jobs {
		next := "-"
		if j.Next != nil {
			next = j.Next.UTC().Format(time.RFC3339)
		}
		last := "-"
		if r := j.LastRun; r != nil {
			last = r.Outcome + " " + r.ScheduledAt.UTC().Format(time.RFC3339)
			if r.Lateness != "" {
				last += " (" + r.Lateness + " late)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%d\n", j.Name, j.Schedule, j.Command, j.Enabled, next, last, len(j.Open))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write jobs: %w", err)
	}
	return nil
}

// writeRuns writes runs as an aligned table.
func writeRuns(w io.Writer, runs []scheduler.Run) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULED\tTRIGGER\tFIRED\tLATENESS\tOUTCOME\tATTEMPTS\tDURATION\tRUN\tDETAIL")
	for _, r := range runs {
		fired, lateness, duration := "-", "-", "-"
		if r.FiredAt != nil {
			fired = r.FiredAt.UTC().Format("15:04:05.000")
			lateness = r.Lateness
		}
		if r.Duration != "" {
			duration = r.Duration
		}
		detail := r.Reason
		if r.Code != "" {
			detail = r.Code + ": " + detail
		}
		if detail == "" {
			detail = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.ScheduledAt.UTC().Format(time.RFC3339), r.Trigger, fired,
			lateness, r.Outcome, r.Attempts, duration, shortID(r.RunID), strings.ReplaceAll(detail, "\t", " "))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write runs: %w", err)
	}
	return nil
}

// shortID is the first block of a UUID, enough to tell runs apart in a table.
func shortID(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}
