package main_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/poison"
	"github.com/millrace/millrace/platform/router"
	"github.com/millrace/millrace/platform/sqlite"
)

// poisonAdmin serves a poison store holding a poisoned order, a message
// parked behind it, and a poisoned user, over a real HTTP server.
func poisonAdmin(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "poison.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	store, err := poison.New(ctx, db, poison.Config{Publisher: pubsub})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	for i, m := range []struct {
		handler, topic, key, typ, payload string
		fail                              bool
	}{
		{"orders", "orders.commands", "o-1", "orders.place-order.v1", `{"order_id":"o-1","lines":[]}`, true},
		{"orders", "orders.commands", "o-1", "orders.pay-order.v1", `{"order_id":"o-1"}`, false},
		{"users", "users.commands", "u-1", "users.register-user.v1", `{"email":"x"}`, true},
	} {
		msg := message.NewMessage("00000000-0000-0000-0000-00000000000"+string(rune('1'+i)), []byte(m.payload))
		msg.Metadata.Set(cloudevents.Type, m.typ)
		msg.Metadata.Set(cloudevents.PartitionKey, m.key)
		msg.Metadata.Set(cloudevents.KafkaTopic, m.topic)
		adm, err := store.Admit(ctx, m.handler, msg)
		if err != nil {
			t.Fatal(err)
		}
		if adm == router.Handle && m.fail {
			now := time.Date(2026, 11, 25, 10, 0, i, 0, time.UTC)
			err = store.Poison(ctx, m.handler, msg, router.Failure{Cause: router.CausePermanent,
				Reason: "decode " + m.typ + ": malformed payload\nsecond line", Attempts: 1, FirstError: now, LastError: now})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(poison.AdminHandler(store, nil))
	t.Cleanup(srv.Close)
	return srv.URL
}

// cli runs the millrace binary with args and extra environment.
func cli(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func TestPoisonCLI(t *testing.T) {
	url := poisonAdmin(t)
	cases := []struct {
		name    string
		env     []string
		args    []string
		wantErr bool
		want    []string // each must appear in stdout (or stderr on error)
		notWant []string
	}{
		{
			name: "list as a table",
			args: []string{"poison", "list", "--admin-url", url},
			want: []string{
				"ID  STATUS    HANDLER  TOPIC            KEY  TYPE                    ATTEMPTS  UPDATED",
				"1   poisoned  orders   orders.commands  o-1  orders.place-order.v1   1",
				"decode orders.place-order.v1: malformed payload",
				"2   parked    orders   orders.commands  o-1  orders.pay-order.v1     0",
				"parked behind entry 1, the head of key o-1",
				"3   poisoned  users",
			},
			notWant: []string{"second line"},
		},
		{
			name:    "filters, with the admin URL from the environment",
			env:     []string{"MILLRACE_ADMIN_URL=" + url},
			args:    []string{"poison", "list", "--handler", "orders", "--status", "parked"},
			want:    []string{"2   parked"},
			notWant: []string{"1   poisoned", "users"},
		},
		{
			name: "nothing matches",
			args: []string{"poison", "list", "--admin-url", url, "--key", "nope"},
			want: []string{"No poison entries match."},
		},
		{
			name: "show",
			args: []string{"poison", "show", "1", "--admin-url", url},
			want: []string{
				"Status       poisoned", "Topic        orders.commands (partition -1, offset -1)",
				"Reason:\n  decode orders.place-order.v1: malformed payload\n  second line",
				"ce_type: orders.place-order.v1",
				"Payload:\n  {\n    \"order_id\": \"o-1\",",
				"History:", "poisoned",
			},
		},
		{
			name:    "requeue behind the head is refused with what to do",
			args:    []string{"poison", "requeue", "2", "--admin-url", url},
			wantErr: true,
			want:    []string{"entry 2 waits behind entry 1 of key o-1 for handler orders; requeue entry 1 first"},
		},
		{
			name:    "requeue needs a target",
			args:    []string{"poison", "requeue", "--admin-url", url},
			wantErr: true,
			want:    []string{"name an entry id, a sequence (--handler and --key) or --all"},
		},
		{
			name: "requeue a sequence",
			args: []string{"poison", "requeue", "--handler", "orders", "--key", "o-1", "--admin-url", url},
			want: []string{"Requeued 1 entry (1); 1 more follow in order as each is handled."},
		},
		{
			name:    "drop needs a reason",
			args:    []string{"poison", "drop", "3", "--admin-url", url},
			wantErr: true,
			want:    []string{"--reason is required"},
		},
		{
			name: "drop records the reason",
			args: []string{"poison", "drop", "3", "--reason", "test user, never real", "--admin-url", url},
			want: []string{"Dropped entry 3 (users, key u-1): test user, never real"},
		},
		{
			name: "dropped entries stay listed with their reason",
			args: []string{"poison", "list", "--status", "dropped", "--admin-url", url},
			want: []string{"3   dropped  users", "dropped: test user, never real"},
		},
		{
			name:    "an unknown entry",
			args:    []string{"poison", "show", "42", "--admin-url", url},
			wantErr: true,
			want:    []string{"poison entry 42 not found"},
		},
		{
			name:    "nothing listening",
			args:    []string{"poison", "list", "--admin-url", "http://127.0.0.1:1"},
			wantErr: true,
			want:    []string{"is millrace running there? set --admin-url or MILLRACE_ADMIN_URL"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := cli(t, tc.env, tc.args...)
			if (err != nil) != tc.wantErr {
				t.Fatalf("exit error %v, want error %v\nstdout:\n%s\nstderr:\n%s", err, tc.wantErr, stdout, stderr)
			}
			out := stdout
			if tc.wantErr {
				out = stderr
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}
