package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/consul"
)

func newConfigCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var adminURL string
	client := func() (*config.Client, error) { return config.NewClient(adminURL, adminHTTPClient(getenv)) }
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and change the live rules: get, set, history, rollback",
		Long: `config works on the rules of a running millrace (docs/configuration.md): router and gateway
rules, feature flags and the log level, merged from their layers (defaults, the --config file,
MILLRACE_RULES__* variables, the Consul key millrace/<env>/<role>/rules).

get, history and rollback talk to the process's admin API (--admin-url, or MILLRACE_ADMIN_URL;
the credential, when authentication is on, comes from MILLRACE_TOKEN): only the process knows
its layers, its history and what it has in force. set does too by default, so that the change is
checked with every layer of the process before it is written; with --consul it writes the
Consul key directly, for when no process runs yet.

Every accepted change is recorded (who, when, old and new) on the millrace.config topic;
history lists the versions, rollback writes one back.`,
	}
	cmd.PersistentFlags().StringVar(&adminURL, "admin-url", envOr(getenv, "MILLRACE_ADMIN_URL", defaultAdminURL),
		"base URL of the millrace admin API (MILLRACE_ADMIN_URL)")
	cmd.AddCommand(
		newConfigGetCommand(client, stdout),
		newConfigSetCommand(client, getenv, stdout),
		newConfigHistoryCommand(client, stdout),
		newConfigRollbackCommand(client, getenv, stdout),
	)
	return cmd
}

func newConfigGetCommand(client func() (*config.Client, error), stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get [KEY]",
		Short: "Print the rules in force, every setting included, secrets as ***",
		Example: `  millrace config get
  millrace config get gateway.max_in_flight
  millrace config get 'router.handlers["notifications.orders.events"]'
  millrace config get --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			key := ""
			if len(args) == 1 {
				key = args[0]
			}
			v, err := c.Get(cmd.Context(), key)
			if err != nil {
				return fmt.Errorf("get the rules: %w", err)
			}
			if asJSON {
				return writeJSONTo(stdout, v)
			}
			if key != "" {
				_, err := io.WriteString(stdout, v.YAML)
				return err
			}
			printConfigHeader(stdout, v)
			_, err = io.WriteString(stdout, v.YAML)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the admin API's answer as JSON: status, layers and the rules")
	return cmd
}

// printConfigHeader writes where the rules come from, as YAML comments, so
// that the output stays a valid rules document.
func printConfigHeader(w io.Writer, v config.ConfigView) {
	fmt.Fprintf(w, "# configuration version %d, in force since %s\n", v.Version, clock(v.AppliedAt))
	for _, l := range v.Layers {
		state := ""
		switch {
		case l.Absent:
			state = " (absent)"
		case l.Revision != "":
			state = " (revision " + l.Revision + ")"
		}
		mark := ""
		if l.ID != "" && l.ID == v.Writable {
			mark = "  <- config set writes here"
		}
		fmt.Fprintf(w, "# layer: %s%s%s\n", l.Source, state, mark)
	}
	for _, s := range v.States {
		if !s.Healthy {
			fmt.Fprintf(w, "# UNREACHABLE since %s: %s (the configuration read last stays in force)\n", clock(s.Since), s.Error)
		}
	}
	if v.Refused != "" {
		fmt.Fprintf(w, "# LAST CHANGE REFUSED at %s; these rules stay in force:\n", clock(derefTime(v.RefusedAt)))
		for _, line := range strings.Split(v.Refused, "\n") {
			fmt.Fprintf(w, "#   %s\n", line)
		}
	}
}

func newConfigSetCommand(client func() (*config.Client, error), getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		who, reason string
		unset       bool
		direct      bool
		env, role   string
	)
	cmd := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change one setting where the process reads it from (its file, or its Consul key)",
		Long: `set changes one setting in the writable layer of the running process: its Consul key when it
runs with Consul, else its --config file. VALUE is YAML: 64, 2s, true, "a string", [a, b],
{rate: 5, burst: 10}. The result is checked with every layer first, as the process would check
it: a value it would refuse is refused here, with every problem, and never written.

With --consul, set writes the Consul key millrace/<env>/<role>/rules itself (CONSUL_* variables
say how to reach Consul), checked on its own over the defaults: for setting up a cluster before
its processes run. Running processes apply it as their watch sees it.

--unset removes the setting from the writable layer: the layers below, or the default, decide it.`,
		Example: `  millrace config set gateway.max_in_flight 64
  millrace config set features.gateway_prefer_wait false --reason "load test"
  millrace config set 'gateway.timeouts.routes["GET /v1/orders/{id}"]' 2s
  millrace config set --unset log_level
  millrace config set --consul --env prod --role gateway gateway.max_in_flight 256`,
		Args: func(cmd *cobra.Command, args []string) error {
			if unset {
				return cobra.ExactArgs(1)(cmd, args)
			}
			if len(args) != 2 {
				return fmt.Errorf("set: give KEY and VALUE (or --unset KEY); got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			value := ""
			if len(args) == 2 {
				value = args[1]
			}
			who := whoFrom(who, getenv)
			if direct {
				return setInConsul(cmd.Context(), getenv, env, role, config.Edit{Path: args[0], Value: value, Unset: unset},
					config.Note{Who: who, Reason: reason}, stdout)
			}
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.Set(cmd.Context(), config.SetRequest{Key: args[0], Value: value, Unset: unset, Who: who, Reason: reason})
			if err != nil {
				return fmt.Errorf("set %s: %w", args[0], err)
			}
			fmt.Fprintln(stdout, capitalize(res.Detail)+".")
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&who, "as", "", "who makes the change, for the history (default $USER)")
	fs.StringVar(&reason, "reason", "", "why, for the history")
	fs.BoolVar(&unset, "unset", false, "remove the setting instead of setting it")
	fs.BoolVar(&direct, "consul", false, "write the Consul key directly instead of asking a running process")
	bindRulesKeyFlags(fs, &env, &role, getenv)
	return cmd
}

// setInConsul writes one setting in the Consul key of an environment and
// role, checked over the defaults.
func setInConsul(ctx context.Context, getenv func(string) string, env, role string, e config.Edit, note config.Note, stdout io.Writer) error {
	key, err := config.KVKey(env, role)
	if err != nil {
		return fmt.Errorf("set %s in consul: %w", e.Path, err)
	}
	ccfg, err := consul.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("set %s in consul: %w", e.Path, err)
	}
	client, err := consul.NewClient(ccfg)
	if err != nil {
		return err
	}
	kv, err := config.NewConsulKV(client, key, config.KVOptions{})
	if err != nil {
		return err
	}
	stack, err := config.NewStack(config.Layer{Source: kv, Optional: true})
	if err != nil {
		return err
	}
	live, err := config.New(stack, config.Options[rulesFile]{Defaults: defaultRulesFile, Validate: rulesFile.Validate})
	if err != nil {
		return err
	}
	w, err := live.Set(ctx, e, note)
	if err != nil {
		return fmt.Errorf("set %s in %s: %w", e.Path, kv.Name(), err)
	}
	if !w.Changed {
		fmt.Fprintf(stdout, "%s says so already; nothing was written.\n", kv.Name())
		return nil
	}
	fmt.Fprintf(stdout, "Wrote %s at %s (revision %s); running processes of %s/%s apply it as their watch sees it.\n",
		kv.Name(), ccfg.URL(), w.Revision, env, role)
	return nil
}

func newConfigHistoryCommand(client func() (*config.Client, error), stdout io.Writer) *cobra.Command {
	var (
		document string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "history [VERSION]",
		Short: "List the versions of the rules, or show one: who, when, what changed",
		Long: `history lists the accepted changes of the writable document of the running process (its Consul
key, or its file), oldest first, as recorded on the millrace.config topic: version, when, who,
how, and what changed. Give a VERSION to see that change in full. Secrets show as ***; a change
of a secret is noted, never its value.`,
		Example: `  millrace config history
  millrace config history 3
  millrace config history --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			h, err := c.History(cmd.Context(), document)
			if err != nil {
				return fmt.Errorf("list the history: %w", err)
			}
			if len(args) == 1 {
				v, err := versionArg(args[0])
				if err != nil {
					return err
				}
				if v > uint64(len(h.Changes)) {
					return fmt.Errorf("%s has no version %d (it has %d)", orDash(h.Document), v, len(h.Changes))
				}
				ch := h.Changes[v-1]
				if asJSON {
					return writeJSONTo(stdout, ch)
				}
				printChange(stdout, ch)
				return nil
			}
			if asJSON {
				return writeJSONTo(stdout, h)
			}
			if len(h.Changes) == 0 {
				fmt.Fprintf(stdout, "No changes of %s recorded.\n", orDash(h.Document))
				return nil
			}
			fmt.Fprintf(stdout, "History of %s\n", h.Document)
			printHistory(stdout, h.Changes)
			return nil
		},
	}
	cmd.Flags().StringVar(&document, "document", "", "the document to list (default the writable one; see --json for the others)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printHistory writes one line per version.
func printHistory(w io.Writer, changes []config.Change) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tWHEN\tWHO\tVIA\tCHANGES")
	for _, c := range changes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.Version, clock(c.At), orDash(c.Who), orDash(c.Via), clip(summary(c), 80))
	}
	_ = tw.Flush() // the writer is the terminal; nothing to do on failure
}

// summary says in one line what a change changed.
func summary(c config.Change) string {
	if c.NewAbsent {
		return "document removed"
	}
	if c.OldAbsent {
		n := len(config.Diff("", c.New))
		if c.Version == 1 {
			return fmt.Sprintf("first version (%d settings)", n)
		}
		return fmt.Sprintf("document written again (%d settings)", n)
	}
	lines := config.Diff(c.Old, c.New)
	for _, s := range c.SecretsChanged {
		lines = append(lines, s+": (secret changed)")
	}
	switch len(lines) {
	case 0:
		return "(layout only)"
	case 1:
		return lines[0]
	default:
		return lines[0] + fmt.Sprintf(" (+%d more)", len(lines)-1)
	}
}

// printChange writes one version in full.
func printChange(w io.Writer, c config.Change) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("Version", strconv.FormatUint(c.Version, 10))
	row("Document", c.Document)
	row("Revision", c.Revision)
	row("When", clock(c.At))
	row("Who", orDash(c.Who))
	row("Via", orDash(c.Via))
	row("Reason", c.Reason)
	row("Recorded by", c.Instance)
	_ = tw.Flush()
	fmt.Fprintln(w, "\nChanges:")
	lines := config.Diff(c.Old, c.New)
	for _, s := range c.SecretsChanged {
		lines = append(lines, s+": (secret changed)")
	}
	if len(lines) == 0 {
		lines = []string{"(none: " + summary(c) + ")"}
	}
	for _, l := range lines {
		fmt.Fprintln(w, "  "+l)
	}
	fmt.Fprintln(w, "\nDocument:")
	if c.NewAbsent {
		fmt.Fprintln(w, "  (removed)")
		return
	}
	fmt.Fprintln(w, indent(c.New))
}

func newConfigRollbackCommand(client func() (*config.Client, error), getenv func(string) string, stdout io.Writer) *cobra.Command {
	var who, reason, document string
	cmd := &cobra.Command{
		Use:   "rollback VERSION",
		Short: "Put the rules back as they were at a version of the history",
		Long: `rollback writes version VERSION of the writable document (as millrace config history lists it)
back to where it lives: the file or the Consul key. It is checked with every layer first, like a
set, then applied as any change is, and recorded as a new version. Secrets are never in the
history: they stay as they are now.`,
		Example: `  millrace config rollback 3 --reason "max_in_flight 64 was too low"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := versionArg(args[0])
			if err != nil {
				return err
			}
			c, err := client()
			if err != nil {
				return err
			}
			res, err := c.Rollback(cmd.Context(), config.RollbackRequest{Version: v, Document: document, Who: whoFrom(who, getenv), Reason: reason})
			if err != nil {
				return fmt.Errorf("roll back to version %d: %w", v, err)
			}
			fmt.Fprintln(stdout, capitalize(res.Detail)+".")
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&who, "as", "", "who rolls back, for the history (default $USER)")
	fs.StringVar(&reason, "reason", "", "why, for the history")
	fs.StringVar(&document, "document", "", "the document to roll back (default the writable one)")
	return cmd
}

// whoFrom is the author of a change: --as, else $USER.
func whoFrom(as string, getenv func(string) string) string {
	if as = strings.TrimSpace(as); as != "" {
		return as
	}
	return strings.TrimSpace(getenv("USER"))
}

func versionArg(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("version %q: want the number millrace config history shows in its VERSION column", s)
	}
	return v, nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func derefTime[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
