package notifications_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/platform/sqlite"
)

// outbox is a Deliverer that keeps what it was asked to send, and fails
// while failing is set.
type outbox struct {
	mu      sync.Mutex
	sent    []string // event ids
	failing bool
}

var errMailDown = errors.New("mail server down")

func (o *outbox) Deliver(_ context.Context, n notifications.Notification) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failing {
		return errMailDown
	}
	o.sent = append(o.sent, n.EventID)
	return nil
}

func (o *outbox) delivered() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.sent...)
}

func newDeliveringReactor(t *testing.T, d notifications.Deliverer) *notifications.Reactor {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "notifications.db"))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := notifications.New(ctx, db, clock(), notifications.WithDeliverer(d))
	if err != nil {
		t.Fatalf("create reactor: %v", err)
	}
	return r
}

// handleIn calls the reactor's handler for e with ctx, as the event processor
// would; it returns the handler's error.
func handleIn(ctx context.Context, t *testing.T, r *notifications.Reactor, eventID string, e events.Message) error {
	t.Helper()
	ctx = cqrs.CtxWithOriginalMessage(ctx, message.NewMessage(eventID, nil))
	for _, h := range r.GroupHandlers() {
		if (cloudevents.Marshaler{}).Name(h.NewEvent()) != e.Name() {
			continue
		}
		ptr := reflect.New(reflect.TypeOf(e))
		ptr.Elem().Set(reflect.ValueOf(e))
		return h.Handle(ctx, ptr.Interface())
	}
	t.Fatalf("no handler for %s", e.Name())
	return nil
}

func TestDeliveryOnceAndNeverOnReplay(t *testing.T) {
	shipped := events.OrderShipped{OrderID: "o-1", UserID: "u-1", Carrier: "DHL"}
	live, replay := context.Background(), cloudevents.WithReplay(context.Background())
	steps := []struct {
		name          string
		ctx           context.Context
		eventID       string
		wantDelivered []string
		wantListed    int
	}{
		{"a new event is recorded and delivered", live, "e1", []string{"e1"}, 1},
		{"its redelivery delivers nothing", live, "e1", []string{"e1"}, 1},
		{"its replay delivers nothing", replay, "e1", []string{"e1"}, 1},
		{"an event first met in a replay is listed, not delivered", replay, "e2", []string{"e1"}, 2},
		{"nor when it comes again live", live, "e2", []string{"e1"}, 2},
		{"the next new event is delivered", live, "e3", []string{"e1", "e3"}, 3},
	}
	o := &outbox{}
	r := newDeliveringReactor(t, o)
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := handleIn(s.ctx, t, r, s.eventID, shipped); err != nil {
				t.Fatalf("handle: %v", err)
			}
			if got := o.delivered(); !reflect.DeepEqual(got, s.wantDelivered) {
				t.Errorf("delivered %v, want %v", got, s.wantDelivered)
			}
			if got := len(forUser(t, r, "u-1")); got != s.wantListed {
				t.Errorf("listed %d notifications, want %d", got, s.wantListed)
			}
		})
	}
}

func TestFailedDeliveryIsRetriedOnRedelivery(t *testing.T) {
	o := &outbox{failing: true}
	r := newDeliveringReactor(t, o)
	placed := events.OrderPlacedV2{OrderID: "o-1", UserID: "u-1", ItemCount: 3, TotalCents: 2699, Currency: "EUR"}
	if err := handleIn(context.Background(), t, r, "e1", placed); !errors.Is(err, errMailDown) {
		t.Fatalf("handle with the mail server down = %v, want its error", err)
	}
	o.mu.Lock()
	o.failing = false
	o.mu.Unlock()
	if err := handleIn(context.Background(), t, r, "e1", placed); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if got := o.delivered(); !reflect.DeepEqual(got, []string{"e1"}) {
		t.Errorf("delivered %v, want e1 once", got)
	}
	list := forUser(t, r, "u-1")
	if len(list) != 1 || list[0].Body != "We received your order o-1: 3 items for 26.99 EUR." {
		t.Errorf("notifications = %+v", list)
	}
}

// keeper is a Deliverer that keeps every notification it delivers, whole.
type keeper struct {
	mu   sync.Mutex
	sent []notifications.Notification
	fail bool
}

func (k *keeper) Deliver(_ context.Context, n notifications.Notification) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail {
		return errMailDown
	}
	k.sent = append(k.sent, n)
	return nil
}

// The notification delivered is the one recorded and listed, whether it is
// delivered as it is recorded or, after a failed delivery, read back on the
// event's redelivery.
func TestDeliveredNotificationIsTheListedOne(t *testing.T) {
	placed := events.OrderPlacedV2{OrderID: "o-1", UserID: "u-1", ItemCount: 3, TotalCents: 2699, Currency: "EUR"}
	cases := []struct {
		name        string
		failedFirst bool
	}{
		{"delivered as it is recorded", false},
		{"delivered on redelivery after a failure", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := &keeper{fail: tc.failedFirst}
			r := newDeliveringReactor(t, k)
			if tc.failedFirst {
				if err := handleIn(context.Background(), t, r, "e1", placed); !errors.Is(err, errMailDown) {
					t.Fatalf("handle with the mail server down = %v, want its error", err)
				}
				k.mu.Lock()
				k.fail = false
				k.mu.Unlock()
			}
			if err := handleIn(context.Background(), t, r, "e1", placed); err != nil {
				t.Fatalf("handle: %v", err)
			}
			list := forUser(t, r, "u-1")
			if len(k.sent) != 1 || len(list) != 1 {
				t.Fatalf("delivered %d and listed %d notifications, want one each", len(k.sent), len(list))
			}
			got, want := k.sent[0], list[0]
			if !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.IsZero() {
				t.Errorf("delivered created at %v, listed %v", got.CreatedAt, want.CreatedAt)
			}
			got.CreatedAt, want.CreatedAt = time.Time{}, time.Time{}
			if got != want {
				t.Errorf("delivered %+v, listed %+v", got, want)
			}
		})
	}
}
