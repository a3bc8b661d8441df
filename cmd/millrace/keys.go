package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/auth"
)

// newKeysCommand is `millrace keys`: API keys in the auth file. A running
// millrace watches the file, so a key made or revoked here is accepted or
// refused within a second, without a restart.
func newKeysCommand(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Make, list and revoke API keys in the auth file",
		Long: `keys manages the API keys of the auth file (--auth-file, MILLRACE_AUTH_FILE). The file
stores a hash of each key, never the key: a key is shown once, when it is made.

A running millrace watches its auth file and takes a new or revoked key into account
within a second. The file keeps its comments and other settings; it is written with
mode 0600.`,
	}
	cmd.PersistentFlags().StringVar(&file, "auth-file", getenv(envAuthFile), "the auth file ("+envAuthFile+")")
	need := func() error {
		if file == "" {
			return fmt.Errorf("no auth file: pass --auth-file or set %s", envAuthFile)
		}
		if ext := strings.ToLower(filepath.Ext(file)); ext != ".yaml" && ext != ".yml" {
			return fmt.Errorf("auth file %s: millrace keys edits YAML files (.yaml or .yml)", file)
		}
		return nil
	}

	var subject string
	var scopes []string
	create := &cobra.Command{
		Use:   "create --subject NAME --scope SCOPE [--scope SCOPE …]",
		Short: "Make an API key and print it, once",
		Example: `  millrace keys create --subject ci-deploy --scope commands:write --scope queries:read
  millrace keys create --subject payments --scope commands:write:orders.pay-order.v1
  millrace keys create --subject ops --scope admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := need(); err != nil {
				return err
			}
			for _, s := range scopes {
				if !knownScope(s) {
					fmt.Fprintf(stderr, "warning: no route of millrace asks for the scope %q; the key gets it anyway\n", s)
				}
			}
			key, rec, err := auth.NewAPIKey(subject, scopes, time.Now(), nil)
			if err != nil {
				return err
			}
			if err := editAuthFile(file, func(root *yaml.Node) error { return appendKey(root, rec) }); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "Made API key %s for %s with the scopes %s, in %s.\n", rec.ID, rec.Subject, strings.Join(rec.Scopes, ", "), file)
			fmt.Fprintf(stdout, "This is the only time the key is shown; keep it in a secret store:\n\n    %s\n\n", key.Reveal())
			fmt.Fprintf(stdout, "Send it as Authorization: Bearer <key> (or %s: <key>).\n", auth.APIKeyHeader)
			return nil
		},
	}
	create.Flags().StringVar(&subject, "subject", "", "who requests with this key come from, e.g. ci-deploy (required)")
	create.Flags().StringSliceVar(&scopes, "scope", nil, "a scope of the key; repeat or separate with commas (required): "+strings.Join(baseScopes(), ", "))
	_ = create.MarkFlagRequired("subject")
	_ = create.MarkFlagRequired("scope")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the API keys of the auth file (ids, never the keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := need(); err != nil {
				return err
			}
			f, _, err := readAuthFile(file)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSUBJECT\tSCOPES\tCREATED\tSTATUS")
			now := time.Now()
			for _, k := range f.APIKeys {
				status := "active"
				if k.RevokedAt != nil {
					status = "revoked " + k.RevokedAt.UTC().Format(time.RFC3339)
					if !k.Revoked(now) {
						status = "revokes at " + k.RevokedAt.UTC().Format(time.RFC3339)
					}
				}
				created := "-"
				if !k.CreatedAt.IsZero() {
					created = k.CreatedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Subject, strings.Join(k.Scopes, ","), created, status)
			}
			return tw.Flush()
		},
	}

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key: it is refused from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := need(); err != nil {
				return err
			}
			now := time.Now().UTC().Truncate(time.Second)
			if err := editAuthFile(file, func(root *yaml.Node) error { return revokeKey(root, args[0], now) }); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "Revoked API key %s in %s; a running millrace refuses it within a second.\n", args[0], file)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// baseScopes are the scopes millrace's routes ask for, without the
// per-command refinements.
func baseScopes() []string {
	return []string{auth.ScopeCommandsWrite, auth.ScopeQueriesRead, auth.ScopeAdmin, auth.ScopeMetricsRead, auth.ScopeHealthRead}
}

// knownScope reports whether a route of millrace asks for s or a
// refinement of it: a base scope, or commands:write:<command wire name>.
func knownScope(s string) bool {
	if containsString(baseScopes(), s) {
		return true
	}
	name, ok := strings.CutPrefix(s, auth.ScopeCommandsWrite+":")
	if !ok {
		return false
	}
	t, ok := events.Lookup(name)
	return ok && t.Kind == events.KindCommand && gateway.CommandScope(name) == s
}

// readAuthFile reads and checks the auth file, returning it decoded and as
// a YAML tree. A missing file is an empty one.
func readAuthFile(file string) (authFile, *yaml.Node, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		data = nil
	} else if err != nil {
		return authFile{}, nil, fmt.Errorf("read auth file: %w", err)
	}
	f, root, err := decodeAuthFile(file, data)
	if err != nil {
		return authFile{}, nil, err
	}
	return f, root, nil
}

// decodeAuthFile decodes an auth file strictly and validates it.
func decodeAuthFile(file string, data []byte) (authFile, *yaml.Node, error) {
	f := defaultAuthFile()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return f, nil, fmt.Errorf("auth file %s: %w", file, err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return f, nil, fmt.Errorf("auth file %s: %w", file, err)
		}
		if err := f.Validate(); err != nil {
			return f, nil, fmt.Errorf("auth file %s: %w", file, err)
		}
	}
	if doc.Kind == 0 { // an empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}},
			HeadComment: "millrace auth file: JWT settings, API keys, public routes, CORS (docs/security.md).\n" +
				"It holds hashes of the API keys, never the keys; keep it readable by millrace only (chmod 600)."}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return f, nil, fmt.Errorf("auth file %s: want a mapping at the top (jwt:, api_keys:, …)", file)
	}
	return f, &doc, nil
}

// editAuthFile applies edit to the YAML tree of the auth file, checks the
// result and writes it back atomically, keeping comments and the other
// settings, with mode 0600.
func editAuthFile(file string, edit func(root *yaml.Node) error) error {
	_, doc, err := readAuthFile(file)
	if err != nil {
		return err
	}
	if err := edit(doc.Content[0]); err != nil {
		return err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("encode auth file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode auth file: %w", err)
	}
	if _, _, err := decodeAuthFile(file, buf.Bytes()); err != nil {
		return fmt.Errorf("the edited auth file would not be valid (nothing was written): %w", err)
	}
	return writeFileAtomic(file, buf.Bytes(), 0o600)
}

// appendKey adds rec to the api_keys list of the root mapping.
func appendKey(root *yaml.Node, rec auth.APIKey) error {
	var item yaml.Node
	if err := item.Encode(rec); err != nil {
		return fmt.Errorf("encode api key: %w", err)
	}
	list := mappingValue(root, "api_keys")
	if list == nil {
		list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "api_keys"}, list)
	}
	if list.Kind != yaml.SequenceNode {
		return errors.New("api_keys: want a list")
	}
	list.Style = 0 // block style, whatever an empty list was written as
	list.Content = append(list.Content, &item)
	return nil
}

// revokeKey sets revoked_at on the key named id.
func revokeKey(root *yaml.Node, id string, at time.Time) error {
	list := mappingValue(root, "api_keys")
	if list != nil && list.Kind == yaml.SequenceNode {
		for _, item := range list.Content {
			if idNode := mappingValue(item, "id"); idNode == nil || idNode.Value != id {
				continue
			}
			if prev := mappingValue(item, "revoked_at"); prev != nil && prev.Value != "" && prev.Tag != "!!null" {
				return fmt.Errorf("api key %s was revoked already, at %s", id, prev.Value)
			}
			var when yaml.Node
			if err := when.Encode(at); err != nil {
				return fmt.Errorf("encode revocation time: %w", err)
			}
			if prev := mappingValue(item, "revoked_at"); prev != nil {
				*prev = when
				return nil
			}
			item.Content = append(item.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "revoked_at"}, &when)
			return nil
		}
	}
	return fmt.Errorf("no api key has the id %q; `millrace keys list` shows the ids", id)
}

// mappingValue returns the value of key in a mapping node, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// writeFileAtomic writes data to a new file beside path and renames it
// over path, so that a reader (the running millrace) sees the old file or
// the new one, never half of one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write auth file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write auth file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write auth file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	return nil
}
