package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/platform/poison"
)

// defaultAdminURL is where millrace dev serves the admin API.
const defaultAdminURL = "http://127.0.0.1:8080"

func newPoisonCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var adminURL string
	client := func() (*poison.Client, error) { return poison.NewClient(adminURL, adminHTTPClient(getenv)) }
	cmd := &cobra.Command{
		Use:   "poison",
		Short: "List, show, requeue and drop messages in the poison queue",
		Long: `poison works on the poison queue of a running millrace: the messages a handler could not
process (a permanent failure, a panic, or retries spent), and the later messages of the same key
parked behind them so that they do not overtake it.

Fix the cause, then requeue: a requeued message keeps its id, so handlers that applied it already
skip it, and a key's parked messages follow it in order. Drop what must not be handled, with a
reason that is kept.

It talks to the admin API of millrace dev (--admin-url, or MILLRACE_ADMIN_URL).`,
	}
	cmd.PersistentFlags().StringVar(&adminURL, "admin-url", envOr(getenv, "MILLRACE_ADMIN_URL", defaultAdminURL),
		"base URL of the millrace admin API (MILLRACE_ADMIN_URL)")
	cmd.AddCommand(
		newPoisonListCommand(client, stdout),
		newPoisonShowCommand(client, stdout),
		newPoisonRequeueCommand(client, stdout),
		newPoisonDropCommand(client, stdout),
	)
	return cmd
}

func newPoisonListCommand(client func() (*poison.Client, error), stdout io.Writer) *cobra.Command {
	var (
		f      poison.Filter
		status string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List poison entries, oldest first",
		Example: `  millrace poison list
  millrace poison list --handler orders --status poisoned
  millrace poison list --key 7f1c0c1e-… --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			f.Status = poison.Status(status)
			entries, err := c.List(cmd.Context(), f)
			if err != nil {
				return fmt.Errorf("list poison entries: %w", err)
			}
			if asJSON {
				return writeJSONTo(stdout, entries)
			}
			if len(entries) == 0 {
				fmt.Fprintln(stdout, "No poison entries match.")
				return nil
			}
			printEntries(stdout, entries)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.Handler, "handler", "", "only entries of this handler")
	fs.StringVar(&f.Topic, "topic", "", "only messages consumed from this topic")
	fs.StringVar(&f.Key, "key", "", "only messages of this partition key (aggregate id)")
	fs.StringVar(&status, "status", "", "only entries in this status: poisoned, parked, requeued, handled or dropped")
	fs.Int64Var(&f.After, "after", 0, "only entries with a greater id (to page)")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many entries (default 100, at most 1000)")
	fs.BoolVar(&asJSON, "json", false, "print the entries as JSON")
	return cmd
}

func newPoisonShowCommand(client func() (*poison.Client, error), stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one entry: why it failed, its headers, payload and history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := entryID(args[0])
			if err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			e, err := c.Get(cmd.Context(), id)
			if err != nil {
				return fmt.Errorf("show poison entry %d: %w", id, err)
			}
			if asJSON {
				return writeJSONTo(stdout, e)
			}
			printEntry(stdout, e)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entry as JSON")
	return cmd
}

func newPoisonRequeueCommand(client func() (*poison.Client, error), stdout io.Writer) *cobra.Command {
	var (
		handler, key string
		all          bool
	)
	cmd := &cobra.Command{
		Use:   "requeue [ID]",
		Short: "Republish entries to their original topic, in order per key",
		Long: `requeue republishes poisoned or parked messages to the topic they came from, with their
original ids. Name one entry (it must be the head of its key's sequence), a whole sequence
(--handler and --key: its entries follow one another in order), or --all.`,
		Example: `  millrace poison requeue 3
  millrace poison requeue --handler orders --key 7f1c0c1e-…
  millrace poison requeue --all`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq := handler != "" || key != ""
			switch {
			case len(args) == 1 && (seq || all), seq && all:
				return fmt.Errorf("requeue: name one entry, one sequence (--handler and --key) or --all, not several")
			case len(args) == 0 && !seq && !all:
				return fmt.Errorf("requeue: name an entry id, a sequence (--handler and --key) or --all; see millrace poison list")
			case seq && (handler == "" || key == ""):
				return fmt.Errorf("requeue: a sequence needs both --handler and --key")
			}
			c, err := client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if len(args) == 1 {
				id, err := entryID(args[0])
				if err != nil {
					return err
				}
				e, err := c.Requeue(ctx, id)
				if err != nil {
					return fmt.Errorf("requeue poison entry %d: %w", id, err)
				}
				fmt.Fprintf(stdout, "Requeued entry %d (%s, key %s) to %s.\n", e.ID, e.Handler, orDash(e.Key), e.Topic)
				return nil
			}
			var res poison.RequeueResult
			if all {
				res, err = c.RequeueAll(ctx)
			} else {
				res, err = c.RequeueSequence(ctx, handler, key)
			}
			if err != nil {
				return fmt.Errorf("requeue: %w", err)
			}
			fmt.Fprintf(stdout, "Requeued %d %s (%s); %d more follow in order as each is handled.\n",
				len(res.Requeued), plural(len(res.Requeued), "entry", "entries"), joinIDs(res.Requeued), res.Waiting)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&handler, "handler", "", "handler of the sequence to requeue (with --key)")
	fs.StringVar(&key, "key", "", "key of the sequence to requeue (with --handler)")
	fs.BoolVar(&all, "all", false, "requeue every open entry")
	return cmd
}

func newPoisonDropCommand(client func() (*poison.Client, error), stdout io.Writer) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:     "drop ID --reason TEXT",
		Short:   "Give up on an entry, with a reason that is kept",
		Example: `  millrace poison drop 3 --reason "test order, never to be shipped"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := entryID(args[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return fmt.Errorf("drop entry %d: --reason is required; say why the message may be discarded", id)
			}
			c, err := client()
			if err != nil {
				return err
			}
			e, err := c.Drop(cmd.Context(), id, reason)
			if err != nil {
				return fmt.Errorf("drop poison entry %d: %w", id, err)
			}
			fmt.Fprintf(stdout, "Dropped entry %d (%s, key %s): %s\n", e.ID, e.Handler, orDash(e.Key), e.DropReason)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the message may be discarded (required, kept with the entry)")
	return cmd
}

// printEntries writes entries as a table, one line each.
func printEntries(w io.Writer, entries []poison.Entry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tHANDLER\tTOPIC\tKEY\tTYPE\tATTEMPTS\tUPDATED\tREASON")
	for _, e := range entries {
		reason := e.Reason
		if e.Status == poison.StatusDropped {
			reason = "dropped: " + e.DropReason
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			e.ID, e.Status, e.Handler, e.Topic, orDash(e.Key), orDash(e.Type), e.Attempts,
			clock(e.UpdatedAt), clip(firstLineOf(reason), 72))
	}
	_ = tw.Flush() // the writer is the terminal; nothing to do on failure
}

// printEntry writes one entry in full.
func printEntry(w io.Writer, e poison.Entry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("Entry", strconv.FormatInt(e.ID, 10))
	row("Status", string(e.Status))
	row("Message id", e.MessageID)
	row("Handler", e.Handler)
	row("Topic", fmt.Sprintf("%s (partition %d, offset %d)", e.Topic, e.Partition, e.Offset))
	row("Key", orDash(e.Key))
	row("Type", e.Type)
	row("Cause", e.Cause)
	row("Attempts", strconv.Itoa(e.Attempts))
	row("First error", clock(e.FirstErrorAt))
	row("Last error", clock(e.LastErrorAt))
	if e.BlockedBy != 0 {
		row("Parked behind", fmt.Sprintf("entry %d", e.BlockedBy))
	}
	row("Requeues", strconv.Itoa(e.Requeues))
	row("Requeued", clock(e.RequeuedAt))
	row("Resolved", clock(e.ResolvedAt))
	row("Drop reason", e.DropReason)
	row("Published", strconv.FormatBool(e.Published))
	row("Created", clock(e.CreatedAt))
	row("Updated", clock(e.UpdatedAt))
	_ = tw.Flush()

	fmt.Fprintln(w, "\nReason:")
	fmt.Fprintln(w, indent(e.Reason))
	fmt.Fprintln(w, "\nHeaders:")
	for _, k := range slices.Sorted(maps.Keys(e.Metadata)) {
		fmt.Fprintf(w, "  %s: %s\n", k, e.Metadata[k])
	}
	fmt.Fprintln(w, "\nPayload:")
	var pretty bytes.Buffer
	if json.Indent(&pretty, e.Payload, "", "  ") == nil {
		fmt.Fprintln(w, indent(pretty.String()))
	} else {
		fmt.Fprintln(w, indent(string(e.Payload)))
	}
	fmt.Fprintln(w, "\nHistory:")
	for _, h := range e.History {
		fmt.Fprintf(w, "  %s  %-15s %s\n", clock(h.At), h.Event, firstLineOf(h.Detail))
	}
}

func entryID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("entry id %q: want the number millrace poison list shows in its ID column", s)
	}
	return id, nil
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func clock(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func clip(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func joinIDs(ids []int64) string {
	if len(ids) == 0 {
		return "none"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ", ")
}
