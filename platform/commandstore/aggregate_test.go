package commandstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/millrace/millrace/platform/commandstore"
)

func TestApplyFirstMessageCreatesStateEventAndInbox(t *testing.T) {
	db, s, counters := storeAt(t)
	ctx := context.Background()

	if err := counters.Apply(incoming("m1", nil), "c1", increment); err != nil {
		t.Fatalf("apply: %v", err)
	}
	state, version, err := counters.Load(ctx, "c1")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if state == nil || state.N != 1 || version != 1 {
		t.Fatalf("state %+v version %d, want N=1 version 1", state, version)
	}
	if n := pending(t, s); n != 1 {
		t.Errorf("pending = %d, want 1", n)
	}
	var handler string
	if err := db.QueryRow("SELECT handler FROM inbox WHERE message_id = 'm1'").Scan(&handler); err != nil {
		t.Fatalf("read inbox: %v", err)
	}
	if handler != "counters" {
		t.Errorf("inbox handler = %q, want counters", handler)
	}
}

func TestApplyFailureWritesNothing(t *testing.T) {
	_, s, counters := storeAt(t)
	ctx := context.Background()
	errTransient := errors.New("users service unavailable")

	err := counters.Apply(incoming("m1", nil), "c1", func(cur *counter) (*counter, []incremented, error) {
		return &counter{ID: "c1", N: 99}, []incremented{{CounterID: "c1", N: 99}}, errTransient
	})
	if !errors.Is(err, errTransient) {
		t.Fatalf("apply returned %v, want it to wrap %v", err, errTransient)
	}
	if state, version, err := counters.Load(ctx, "c1"); err != nil || state != nil || version != 0 {
		t.Errorf("after failure: state %+v version %d err %v, want nothing stored", state, version, err)
	}
	if n := pending(t, s); n != 0 {
		t.Errorf("pending = %d after failure, want 0", n)
	}
	// The message was not recorded in the inbox: its redelivery runs fn.
	called := false
	err = counters.Apply(incoming("m1", nil), "c1", func(cur *counter) (*counter, []incremented, error) {
		called = true
		return increment(cur)
	})
	if err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if !called {
		t.Fatal("redelivery of a failed message did not run fn: the inbox recorded the failure")
	}
	if state, _, _ := counters.Load(ctx, "c1"); state == nil || state.N != 1 {
		t.Errorf("state after redelivery %+v, want N=1", state)
	}
}

func TestApplyDuplicateMessageHasNoSecondEffect(t *testing.T) {
	_, s, counters := storeAt(t)
	ctx := context.Background()
	if err := counters.Apply(incoming("m1", nil), "c1", increment); err != nil {
		t.Fatalf("apply: %v", err)
	}

	called := false
	err := counters.Apply(incoming("m1", nil), "c1", func(cur *counter) (*counter, []incremented, error) {
		called = true
		return increment(cur)
	})
	if err != nil {
		t.Fatalf("apply duplicate: %v", err)
	}
	if called {
		t.Error("fn ran for a message already applied")
	}
	if state, version, _ := counters.Load(ctx, "c1"); state.N != 1 || version != 1 {
		t.Errorf("state %+v version %d after duplicate, want N=1 version 1", state, version)
	}
	if n := pending(t, s); n != 1 {
		t.Errorf("pending = %d after duplicate, want 1", n)
	}
}

func TestInboxIsPerHandler(t *testing.T) {
	_, s, counters := storeAt(t)
	other, err := commandstore.NewAggregate[counter, incremented](s, commandstore.AggregateConfig{
		Name: "counter", Handler: "audit", Topic: eventsTopic, Source: "/test/audit",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := counters.Apply(incoming("m1", nil), "c1", increment); err != nil {
		t.Fatalf("apply: %v", err)
	}
	called := false
	if err := other.Apply(incoming("m1", nil), "c2", func(*counter) (*counter, []incremented, error) {
		called = true
		return nil, nil, nil
	}); err != nil {
		t.Fatalf("apply in another handler: %v", err)
	}
	if !called {
		t.Error("a message applied by one handler was skipped by another")
	}
}

func TestApplyVersions(t *testing.T) {
	cases := []struct {
		name        string
		fns         []func(*counter) (*counter, []incremented, error)
		wantN       int
		wantVersion int64
		wantPending int
	}{
		{
			name:        "every save increments the version",
			fns:         []func(*counter) (*counter, []incremented, error){increment, increment, increment},
			wantN:       3,
			wantVersion: 3,
			wantPending: 3,
		},
		{
			name: "nil next keeps state and version and still emits",
			fns: []func(*counter) (*counter, []incremented, error){
				increment,
				func(cur *counter) (*counter, []incremented, error) {
					return nil, []incremented{{CounterID: "c1", N: -1}}, nil
				},
			},
			wantN:       1,
			wantVersion: 1,
			wantPending: 2,
		},
		{
			name: "nothing to save or emit on a new aggregate",
			fns: []func(*counter) (*counter, []incremented, error){
				func(*counter) (*counter, []incremented, error) { return nil, nil, nil },
			},
			wantN:       0,
			wantVersion: 0,
			wantPending: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, s, counters := storeAt(t)
			for i, fn := range tc.fns {
				if err := counters.Apply(incoming(fmt.Sprintf("m%d", i), nil), "c1", fn); err != nil {
					t.Fatalf("apply %d: %v", i, err)
				}
			}
			state, version, err := counters.Load(context.Background(), "c1")
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			gotN := 0
			if state != nil {
				gotN = state.N
			}
			if gotN != tc.wantN || version != tc.wantVersion {
				t.Errorf("N=%d version %d, want N=%d version %d", gotN, version, tc.wantN, tc.wantVersion)
			}
			if n := pending(t, s); n != tc.wantPending {
				t.Errorf("pending = %d, want %d", n, tc.wantPending)
			}
		})
	}
}

func TestConcurrentAppliesToOneAggregateAreSerialised(t *testing.T) {
	_, _, counters := storeAt(t)
	const goroutines, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				errs <- counters.Apply(incoming(fmt.Sprintf("g%d-%d", g, i), nil), "c1", increment)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	state, version, err := counters.Load(context.Background(), "c1")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if state.N != goroutines*each || version != goroutines*each {
		t.Errorf("N=%d version %d, want both %d: an update was lost", state.N, version, goroutines*each)
	}
}

func TestExists(t *testing.T) {
	_, s, counters := storeAt(t)
	ctx := context.Background()
	if err := counters.Apply(incoming("m1", nil), "c1", increment); err != nil {
		t.Fatalf("apply: %v", err)
	}
	otherKind, err := commandstore.NewAggregate[counter, incremented](s, commandstore.AggregateConfig{
		Name: "gauge", Handler: "gauges", Topic: eventsTopic, Source: "/test/gauges",
	})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ok   func() (bool, error)
		want bool
	}{
		{"saved aggregate", func() (bool, error) { return counters.Exists(ctx, "c1") }, true},
		{"unknown id", func() (bool, error) { return counters.Exists(ctx, "c2") }, false},
		{"same id of another kind", func() (bool, error) { return otherKind.Exists(ctx, "c1") }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.ok()
			if err != nil {
				t.Fatalf("exists: %v", err)
			}
			if got != tc.want {
				t.Errorf("exists = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestApplyWithoutIncomingMessage(t *testing.T) {
	_, _, counters := storeAt(t)
	err := counters.Apply(context.Background(), "c1", increment)
	if !errors.Is(err, commandstore.ErrNoMessage) {
		t.Fatalf("apply without message returned %v, want ErrNoMessage", err)
	}
}

func TestNewAggregateReportsEveryMissingField(t *testing.T) {
	_, s, _ := storeAt(t)
	_, err := commandstore.NewAggregate[counter, incremented](s, commandstore.AggregateConfig{})
	if err == nil {
		t.Fatal("NewAggregate with an empty config succeeded")
	}
	for _, want := range []string{"name", "handler", "topic", "source"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func pending(t *testing.T, s *commandstore.Store) int {
	t.Helper()
	n, err := s.Pending(context.Background())
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	return n
}
