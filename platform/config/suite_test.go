package config_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
)

// sourceUnderTest is a writable source holding a document, and the way an
// operator changes that document behind millrace's back.
type sourceUnderTest struct {
	src config.Writable
	// name is how messages name the document.
	name string
	// put replaces the document directly: a file saved by an editor, a key
	// written with consul kv put.
	put func(t *testing.T, doc string)
}

// runSourceSuite is the behaviour every writable source shares: changes
// applied, bad changes refused with the last good configuration in force,
// set checked before it writes, history and rollback, secrets kept out of
// the history. newSource makes a source holding initial.
func runSourceSuite(t *testing.T, newSource func(t *testing.T, initial string) sourceUnderTest) {
	newLive := func(t *testing.T, s sourceUnderTest) *config.Live[rules] {
		t.Helper()
		live, err := config.New(s.src, config.Options[rules]{Defaults: defaultRules, Validate: rules.validate, Debounce: 10 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return live
	}

	t.Run("a change is applied", func(t *testing.T) {
		s := newSource(t, "name: first\n")
		r := run(t, newLive(t, s), false)
		s.put(t, "name: second\nlimits:\n  rate: 2\n")
		r.waitName(t, "second")
		if got := r.live.Current(); got.Limits.Rate != 2 || got.Limits.Window != time.Second || !got.Features["fast_path"] {
			t.Errorf("in force %+v; want rate 2 from the document and the defaults for the rest", got)
		}
		if st := r.live.Status(); st.Version != 2 || st.Refused != "" {
			t.Errorf("status %+v, want version 2 and nothing refused", st)
		}
	})

	t.Run("an invalid change is refused and the last good one stays", func(t *testing.T) {
		s := newSource(t, "name: first\n")
		r := run(t, newLive(t, s), false)
		s.put(t, "name: broken\nlimits:\n  rate: 0\n")
		waitFor(t, "the change to be refused", func() bool { return r.live.Status().Refused != "" })
		if want := s.name + ":3: limits.rate: must be above 0"; r.live.Status().Refused != want {
			t.Errorf("refusal %q, want %q", r.live.Status().Refused, want)
		}
		if got := r.live.Current().Name; got != "first" {
			t.Errorf("in force %q after a refused change, want first", got)
		}
		s.put(t, "name: fixed\n")
		r.waitName(t, "fixed")
		if st := r.live.Status(); st.Refused != "" {
			t.Errorf("status %+v: the refusal stays after a good change", st)
		}
	})

	t.Run("set checks the change before it writes", func(t *testing.T) {
		s := newSource(t, "# the rules of the test\nname: first # the name\nlimits:\n  rate: 1\n")
		r := run(t, newLive(t, s), false)
		ctx := t.Context()
		before, rev, err := s.src.ReadRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.live.Set(ctx, config.Edit{Path: "limits.rate", Value: "0"}, config.Note{Who: "alice"})
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "limits.rate: must be above 0") {
			t.Fatalf("Set of an invalid value = %v, want a refusal naming limits.rate", err)
		}
		after, rev2, err := s.src.ReadRevision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(after) != string(before) || rev2 != rev {
			t.Errorf("a refused value reached the source: %q (revision %s → %s)", after, rev, rev2)
		}

		w, err := r.live.Set(ctx, config.Edit{Path: "limits.rate", Value: "5"}, config.Note{Who: "alice"})
		if err != nil {
			t.Fatalf("Set: %v", err)
		}
		awaitApplied(t, r.live, w)
		if got := r.live.Current().Limits.Rate; got != 5 {
			t.Errorf("rate in force %v, want 5", got)
		}
		doc, _, _ := s.src.ReadRevision(ctx)
		if want := "# the rules of the test\nname: first # the name\nlimits:\n  rate: 5\n"; string(doc) != want {
			t.Errorf("document after set:\n%s\nwant only the value changed:\n%s", doc, want)
		}
		w, err = r.live.Set(ctx, config.Edit{Path: "limits.rate", Value: "5"}, config.Note{Who: "alice"})
		if err != nil || w.Changed {
			t.Errorf("Set of the value in force = %+v, %v; want nothing written", w, err)
		}
	})

	t.Run("history and rollback", func(t *testing.T) {
		initial := "name: first\nlimits:\n  rate: 1 # as shipped\n"
		s := newSource(t, initial)
		live := newLive(t, s)
		r := run(t, live, true)
		ctx := t.Context()
		doc := s.src.ID()

		v := r.waitVersions(t, doc, 1)
		if v[0].Via != "found at start" || v[0].New != initial || !v[0].OldAbsent {
			t.Errorf("version 1 = %+v; want the document found at start", v[0])
		}

		w, err := live.Set(ctx, config.Edit{Path: "name", Value: "second"}, config.Note{Who: "alice", Reason: "try the second"})
		if err != nil {
			t.Fatal(err)
		}
		awaitApplied(t, live, w)
		v = r.waitVersions(t, doc, 2)
		if c := v[1]; c.Version != 2 || c.Who != "alice" || c.Via != "config set name" || c.Reason != "try the second" ||
			c.Old != initial || !strings.Contains(c.New, "name: second") || c.Revision != w.Revision || c.Source != s.name {
			t.Errorf("version 2 = %+v; want alice's set, old and new", c)
		}

		s.put(t, "name: third\n")
		v = r.waitVersions(t, doc, 3)
		if c := v[2]; c.Who != "" || c.Via != "" || c.New != "name: third\n" || c.Old != v[1].New {
			t.Errorf("version 3 = %+v; want a direct change with no author", c)
		}

		w, err = live.Rollback(ctx, v[0], config.Note{Who: "bob"})
		if err != nil {
			t.Fatalf("Rollback: %v", err)
		}
		awaitApplied(t, live, w)
		if got := live.Current(); got.Name != "first" || got.Limits.Rate != 1 {
			t.Errorf("in force after the rollback: %+v, want version 1's", got)
		}
		data, _, _ := s.src.ReadRevision(ctx)
		if string(data) != initial {
			t.Errorf("document after the rollback:\n%s\nwant version 1 byte for byte:\n%s", data, initial)
		}
		v = r.waitVersions(t, doc, 4)
		if c := v[3]; c.Via != "rollback to version 1" || c.Who != "bob" || c.New != initial || c.Old != "name: third\n" {
			t.Errorf("version 4 = %+v; want the rollback recorded as a change", c)
		}

		// A process reading the topic from the beginning holds the same
		// history, with the same versions.
		waitFor(t, "the reader of the topic to hold 4 versions", func() bool { return len(r.fromTopic.List(doc)) == 4 })
		if got, want := versions(r.fromTopic.List(doc)), versions(v); !slices.Equal(got, want) {
			t.Errorf("history read from the topic: %v, want %v", got, want)
		}
	})

	t.Run("a secret never leaves the process", func(t *testing.T) {
		s := newSource(t, "name: first\nadmin:\n  token: s3cret-one\n  password: s3cret-pw\n")
		live := newLive(t, s)
		r := run(t, live, true)
		ctx := t.Context()
		doc := s.src.ID()
		r.waitVersions(t, doc, 1)

		w, err := live.Set(ctx, config.Edit{Path: "admin.token", Value: "s3cret-two"}, config.Note{Who: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		awaitApplied(t, live, w)
		if live.Current().Admin.Token.Reveal() != "s3cret-two" {
			t.Fatalf("token in force %q, want the new one", live.Current().Admin.Token.Reveal())
		}
		v := r.waitVersions(t, doc, 2)
		if c := v[1]; !slices.Equal(c.SecretsChanged, []string{"admin.token"}) || !strings.Contains(c.New, `token: "***"`) {
			t.Errorf("version 2 = %+v; want the token redacted and noted as changed", c)
		}
		w, err = live.Set(ctx, config.Edit{Path: "name", Value: "second"}, config.Note{Who: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		awaitApplied(t, live, w)
		r.waitVersions(t, doc, 3)

		eff, err := live.Effective()
		if err != nil {
			t.Fatal(err)
		}
		text, err := effectiveText(eff)
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range map[string]string{"the effective configuration": text, "the topic": strings.Join(r.topicPayloads(), "\n"),
			"the history": historyText(r.history.List(doc))} {
			if strings.Contains(s, "s3cret") {
				t.Errorf("%s shows a secret:\n%s", what, s)
			}
		}
		if !strings.Contains(text, `token: "***"`) || !strings.Contains(text, `password: "***"`) {
			t.Errorf("effective configuration does not show the secrets as ***:\n%s", text)
		}

		// Rolling back to version 1 restores the name, not the old token.
		w, err = live.Rollback(ctx, r.history.List(doc)[0], config.Note{Who: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		awaitApplied(t, live, w)
		if got := live.Current(); got.Name != "first" || got.Admin.Token.Reveal() != "s3cret-two" || got.Admin.Password != "s3cret-pw" {
			t.Errorf("in force after the rollback: %+v; want name first and the secrets in force before", got)
		}
	})
}

func TestFileSource(t *testing.T) {
	runSourceSuite(t, func(t *testing.T, initial string) sourceUnderTest {
		path := filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, []byte(initial), 0o644); err != nil {
			t.Fatal(err)
		}
		return sourceUnderTest{src: config.NewFile(path), name: path, put: func(t *testing.T, doc string) {
			t.Helper()
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
		}}
	})
}

func TestConsulKVSource(t *testing.T) {
	agent := consulAgent(t)
	client := agent.Client(t)
	runSourceSuite(t, func(t *testing.T, initial string) sourceUnderTest {
		key := kvKey(t)
		kvPut(t, client, key, initial)
		src, err := config.NewConsulKV(client, key, config.KVOptions{MinRetry: 50 * time.Millisecond, MaxRetry: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return sourceUnderTest{src: src, name: "consul:" + key, put: func(t *testing.T, doc string) { kvPut(t, client, key, doc) }}
	})
}

// awaitApplied waits for a change written by Set or Rollback to be in
// force.
func awaitApplied(t *testing.T, live *config.Live[rules], w config.Written) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := live.AwaitApplied(ctx, w); err != nil {
		t.Fatalf("the change written (%+v) is not in force: %v; status %+v", w, err, live.Status())
	}
}

func versions(cs []config.Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID+"@"+strings.Repeat("v", int(c.Version)))
	}
	return out
}

func historyText(cs []config.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.Old + "\n" + c.New + "\n")
	}
	return b.String()
}
