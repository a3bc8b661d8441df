package main_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/millrace/millrace/platform/kafka"
)

// TestReplayAndReset runs millrace dev as a process and drives it with the
// CLI as a user would: reads after a write, rebuilds the orders projection
// while it serves, lists the projections, and resets the notifications
// reactor to the start of its topic, which must not send any notification
// again.
func TestReplayAndReset(t *testing.T) {
	dev, _ := startDevWithEnv(t)
	env := []string{"MILLRACE_ADMIN_URL=" + dev.base}
	reg := mustDo(t, "POST", dev.base+"/v1/users", map[string]any{"email": "ada@example.com", "name": "Ada Lovelace"},
		map[string]string{"Prefer": "wait=10"})
	userID, _ := reg.body["aggregate_id"].(string)
	if reg.status != http.StatusCreated || userID == "" {
		t.Fatalf("register user: %d %s", reg.status, reg.raw)
	}

	// Read-your-writes: an order read right after it was placed, naming
	// the command, is there.
	const orders = 30
	var orderIDs []string
	for i := range orders {
		placed := mustDo(t, "POST", dev.base+"/v1/orders", map[string]any{"user_id": userID,
			"lines": []map[string]any{{"sku": "tea", "quantity": i%4 + 1, "unit_price_cents": 450}}}, nil)
		// 202 while pending; 201 when the command log already had the
		// outcome by the time the gateway recorded the command.
		if placed.status != http.StatusAccepted && placed.status != http.StatusCreated {
			t.Fatalf("place order: %d %s", placed.status, placed.raw)
		}
		commandID, _ := placed.body["command_id"].(string)
		orderID, _ := placed.body["aggregate_id"].(string)
		if placed.status == http.StatusAccepted {
			orderID = strings.TrimPrefix(linkOf(placed.body, "resource"), "/v1/orders/")
		}
		orderIDs = append(orderIDs, orderID)
		got := mustDo(t, "GET", dev.base+"/v1/orders/"+orderID+"?after="+commandID, nil, map[string]string{"Prefer": "wait=10"})
		if got.status != http.StatusOK || got.body["order_id"] != orderID {
			t.Fatalf("read after placing order %s: %d %s", orderID, got.status, got.raw)
		}
	}

	// Rebuild the orders projection; it follows the rebuild to the swap.
	out, errOut, err := cli(t, env, "replay", "--projection", "orders")
	if err != nil {
		t.Fatalf("millrace replay: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{"orders: building version 2 from the start of the log beside version 1", "orders: version 2 is live",
		"version 1 retired"} {
		if !strings.Contains(out, want) {
			t.Errorf("millrace replay printed\n%s\nwant it to say %q", out, want)
		}
	}
	out, _, err = cli(t, env, "projections")
	if err != nil {
		t.Fatalf("millrace projections: %v", err)
	}
	if !strings.Contains(out, "PROJECTION") || !fieldsOnLine(out, "orders", "v2", "live", "v2 done") {
		t.Errorf("millrace projections printed\n%s\nwant orders at v2, live, its rebuild done", out)
	}
	for _, id := range orderIDs {
		if got := mustDo(t, "GET", dev.base+"/v1/orders/"+id, nil, nil); got.status != http.StatusOK {
			t.Fatalf("order %s after the rebuild: %d %s", id, got.status, got.raw)
		}
	}
	_, errOut, err = cli(t, env, "replay", "--projection", "nope")
	if err == nil || !strings.Contains(errOut, `no projection is named "nope"`) {
		t.Errorf("replay of an unknown projection: %v, %s", err, errOut)
	}

	// Reset the notifications reactor to the start of orders.events: every
	// order event comes again, as a replay, and nobody is notified twice.
	delivered := strings.Count(devLog(dev), "notification delivered")
	if delivered != orders+1 {
		t.Fatalf("%d notifications delivered before the reset, want %d", delivered, orders+1)
	}
	out, errOut, err = cli(t, env, "reset", "--handler", "notifications.orders.events", "--to-offset", "earliest")
	if err != nil {
		t.Fatalf("millrace reset: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, fmt.Sprintf("%d messages will be delivered again (as replays)", orders)) || !strings.Contains(out, "REDELIVERED") {
		t.Errorf("millrace reset printed\n%s\nwant %d redelivered, per partition", out, orders)
	}
	kcfg := kafka.Config{Brokers: []string{kafkaAddrOf(t, dev)}}
	waitFor(t, 30*time.Second, "the reactor handled the replayed events", func() bool {
		ov, err := kafka.Inspect(context.Background(), kcfg)
		if err != nil {
			return false
		}
		g, ok := ov.Group("notifications.orders.events")
		gt, ok2 := g.Topic("orders.events")
		return ok && ok2 && gt.Committed == orders && gt.Lag == 0
	})
	if got := strings.Count(devLog(dev), "notification delivered"); got != delivered {
		t.Errorf("%d notifications delivered after the reset, want still %d", got, delivered)
	}
	list := mustDo(t, "GET", dev.base+"/v1/users/"+userID+"/notifications", nil, nil)
	if n, _ := list.body["notifications"].([]any); len(n) != orders+1 {
		t.Errorf("%d notifications listed after the reset, want %d", len(n), orders+1)
	}
}

// fieldsOnLine reports whether one line of out holds every field, in order.
func fieldsOnLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := line, true
		for _, f := range fields {
			i := strings.Index(rest, f)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(f):]
		}
		if ok {
			return true
		}
	}
	return false
}

// kafkaAddrOf reads the embedded broker's address from the dev command line.
func kafkaAddrOf(t *testing.T, p *devProcess) string {
	t.Helper()
	args := p.cmd.Args
	for i, a := range args {
		if a == "--kafka-addr" && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("no --kafka-addr in %v", args)
	return ""
}

// TestReplayCLIRefusesBadInput checks what the replay, reset and
// projections commands refuse before (or without) reaching a process.
func TestReplayCLIRefusesBadInput(t *testing.T) {
	nobody := []string{"MILLRACE_ADMIN_URL=http://" + freeAddr(t)}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"replay without a projection", []string{"replay"}, "--projection"},
		{"replay from a time that is not one", []string{"replay", "--projection", "orders", "--from-time", "yesterday"}, "RFC 3339"},
		{"replay from offsets that are not", []string{"replay", "--projection", "orders", "--from-offsets", "orders.events=3"}, "topic:partition=offset"},
		{"replay from a time and offsets", []string{"replay", "--projection", "orders", "--from-time", "2025-01-01T00:00:00Z",
			"--from-offsets", "orders.events:0=3"}, "not both"},
		{"reset without a target", []string{"reset", "--handler", "orders"}, "--to-time"},
		{"reset to a bad offset", []string{"reset", "--handler", "orders", "--to-offset", "0=a"}, "partition=offset"},
		{"reset to a bad time", []string{"reset", "--handler", "orders", "--to-time", "noon"}, "RFC 3339"},
		{"projections with nobody listening", []string{"projections"}, "is millrace dev running"},
		{"a bad admin url", []string{"projections", "--admin-url", "localhost:8080"}, "want http://host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, err := cli(t, nobody, tt.args...)
			if err == nil || !strings.Contains(errOut, tt.want) {
				t.Errorf("millrace %v: err %v, stderr %q; want a failure saying %q", tt.args, err, errOut, tt.want)
			}
		})
	}
}
