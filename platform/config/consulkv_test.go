package config_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/config"
	"github.com/millrace/millrace/platform/consul"
	"github.com/millrace/millrace/platform/consul/consultest"
)

// TestConsulKVSurvivesConsulRestart stops the agent under a running
// configuration: the configuration in force stays, the source says Consul
// is unreachable, and once the agent is back the watch resumes and a new
// value is applied.
func TestConsulKVSurvivesConsulRestart(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	client := agent.Client(t)
	key := "millrace/test/all/rules"
	kvPut(t, client, key, "name: before\n")
	logs := &syncBuffer{}
	src, err := config.NewConsulKV(client, key, config.KVOptions{
		MinRetry: 50 * time.Millisecond, MaxRetry: 300 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	live, err := config.New(src, config.Options[rules]{Defaults: defaultRules, Validate: rules.validate, Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, live, false)

	if err := agent.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the source to report consul unreachable", func() bool { return !src.State().Healthy })
	st := src.State()
	// While it stops, the agent answers "No cluster leader"; once stopped,
	// the connection is refused. Either way the failure is named.
	if !strings.Contains(st.Error, " consul key "+key+": ") || st.Since.IsZero() {
		t.Errorf("state while consul is down: %+v; want the failure named", st)
	}
	data, err := src.Read(t.Context())
	if err != nil || string(data) != "name: before\n" {
		t.Errorf("Read while consul is down = %q, %v; want the document read last", data, err)
	}
	if got := live.Current().Name; got != "before" || live.Status().Refused != "" {
		t.Errorf("in force while consul is down: %q, status %+v; want the last good one, nothing refused", got, live.Status())
	}
	if rec := logs.record(t, "consul kv: cannot read the configuration; the configuration read last stays in force, retrying"); rec == nil {
		t.Errorf("no warning logged while consul is down:\n%s", logs.String())
	}

	if err := agent.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the source to report consul reachable", func() bool { return src.State().Healthy })
	// A dev agent comes back empty: the key is gone, which the single
	// source refuses (the last good configuration stays) until it is
	// written again.
	kvPut(t, agent.Client(t), key, "name: after\n")
	r.waitName(t, "after")
	if logs.record(t, "consul kv: reading the configuration again") == nil {
		t.Errorf("no record of consul answering again:\n%s", logs.String())
	}
}

// TestConsulKVPermissionDenied reads a key with a token that may not: the
// error says plainly what the token lacks.
func TestConsulKVPermissionDenied(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{
		HCL:   []string{`acl { enabled = true, default_policy = "deny", tokens { initial_management = "root-token" } }`},
		Token: "root-token",
	})
	cfg := agent.Config()
	cfg.Token = "00000000-0000-0000-0000-000000000001" // not a token of this agent: anonymous rights, none
	client, err := consul.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := "millrace/test/all/rules"
	root := agent.Config()
	root.Token = "root-token"
	rootClient, err := consul.NewClient(root)
	if err != nil {
		t.Fatal(err)
	}
	kvPut(t, rootClient, key, "name: secret\n")

	src, err := config.NewConsulKV(client, key, config.KVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	live, err := config.New(src, config.Options[rules]{Defaults: defaultRules, Validate: rules.validate})
	if err != nil {
		t.Fatal(err)
	}
	_, err = live.Load(t.Context())
	if !errors.Is(err, consul.ErrPermissionDenied) {
		t.Fatalf("Load = %v, want a permission error", err)
	}
	for _, want := range []string{"read consul key " + key, "consul refused it (403", `key_prefix "millrace/" { policy = "read" }`, consul.EnvHTTPToken} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if st := src.State(); st.Healthy || !strings.Contains(st.Error, "403") {
		t.Errorf("state %+v, want the 403 reported", st)
	}

	_, err = src.Write(t.Context(), []byte("name: x\n"), "", config.Note{})
	if !errors.Is(err, consul.ErrPermissionDenied) || !strings.Contains(err.Error(), `policy = "write"`) {
		t.Errorf("Write = %v, want a permission error naming the write policy", err)
	}
}

// TestConsulKVWriteConflict writes with a stale revision: the write is
// refused as a conflict and the key keeps the newer document.
func TestConsulKVWriteConflict(t *testing.T) {
	client := consulAgent(t).Client(t)
	key := kvKey(t)
	kvPut(t, client, key, "name: one\n")
	src, err := config.NewConsulKV(client, key, config.KVOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	_, rev, err := src.ReadRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kvPut(t, client, key, "name: two\n") // someone else, meanwhile
	_, err = src.Write(ctx, []byte("name: three\n"), rev, config.Note{Who: "alice"})
	if !errors.Is(err, config.ErrConflict) {
		t.Fatalf("Write with a stale revision = %v, want ErrConflict", err)
	}
	if data, _ := src.Read(ctx); string(data) != "name: two\n" {
		t.Errorf("key holds %q after a conflicting write, want the newer document", data)
	}

	// A write with the current revision stores the note beside the key.
	_, rev, _ = src.ReadRevision(ctx)
	newRev, err := src.Write(ctx, []byte("name: four\n"), rev, config.Note{Who: "alice", Via: "test"})
	if err != nil {
		t.Fatal(err)
	}
	pair, _, err := client.KV().Get(key, nil)
	if err != nil || pair == nil || string(pair.Value) != "name: four\n" || newRev == rev {
		t.Fatalf("key after write: %+v, %v; revision %s → %s", pair, err, rev, newRev)
	}
	note, ok, err := src.NoteFor(ctx, pair.Value, newRev)
	if err != nil || !ok || note.Who != "alice" || note.Via != "test" {
		t.Errorf("NoteFor = %+v, %v, %v; want alice's note", note, ok, err)
	}
	kvPut(t, client, key, "name: five\n") // written directly
	data, direct, _ := src.ReadRevision(ctx)
	if _, ok, _ := src.NoteFor(ctx, data, direct); ok {
		t.Error("NoteFor attributes a document written directly to millrace")
	}
}

// TestConsulKVWatchBlocks checks that the watch learns of a change through a
// blocking query, not by asking again later: with an hour between retries
// and a minute per query, only a query that Consul answers when the key
// changes reports the write in time.
func TestConsulKVWatchBlocks(t *testing.T) {
	client := consulAgent(t).Client(t)
	key := kvKey(t)
	kvPut(t, client, key, "name: first\n")
	src, err := config.NewConsulKV(client, key, config.KVOptions{WaitTime: time.Minute, MinRetry: time.Hour, MaxRetry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	calls := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, func() { calls <- struct{}{} }) }()
	<-calls // watching
	kvPut(t, client, key, "name: second\n")
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not report the write within 10s")
	}
	if data, _ := src.Read(t.Context()); string(data) != "name: second\n" {
		t.Errorf("Read after the change = %q", data)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil when its context ends", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return within 10s of its context ending: the blocking query is not cancelled")
	}
}
