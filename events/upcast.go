package events

// Upcasting: a consumer that only knows the current version of an event reads
// older versions through Upcast, which converts them step by step (v1 to v2,
// v2 to v3, …). Old versions never leave the log, so a projection rebuilt
// from the start meets every version ever written; Upcast is what lets its
// code handle the newest one only.
//
// An upcaster is a pure function of the old event: it may fill a new field
// from what the old version carried (ItemCount from the lines) or with a
// documented default, but it never looks anything up. Replaying the same log
// therefore always yields the same current events.

// Upcaster converts one version of an event into the next one.
type Upcaster struct {
	// From and To are the wire names, e.g. orders.order-placed.v1 and
	// orders.order-placed.v2.
	From, To string
	// Up converts an event of version From (a pointer, as Type.New makes
	// it, or a value) into a pointer to an event of version To.
	Up func(Message) Message
}

// Upcasters returns every conversion from an old event version to the next,
// oldest first. The slice is new on each call.
func Upcasters() []Upcaster {
	return []Upcaster{
		{
			From: OrderPlaced{}.Name(),
			To:   OrderPlacedV2{}.Name(),
			Up: func(m Message) Message {
				var v1 OrderPlaced
				switch e := m.(type) {
				case *OrderPlaced:
					v1 = *e
				case OrderPlaced:
					v1 = e
				}
				return &OrderPlacedV2{
					OrderID:    v1.OrderID,
					UserID:     v1.UserID,
					Lines:      v1.Lines,
					ItemCount:  ItemCount(v1.Lines),
					TotalCents: v1.TotalCents,
					Currency:   v1.Currency,
					PlacedAt:   v1.PlacedAt,
				}
			},
		},
	}
}

// Upcast returns m as the current version of its event: an event of an older
// version is converted by the upcasters, in turn, into the newest version,
// and returned as a pointer; any other message (a current event, a command,
// a nil or unknown message) is returned as it is.
func Upcast(m Message) Message {
	if m == nil {
		return nil
	}
	ups := Upcasters()
	// Each step moves to a newer version, so the chain ends; the bound
	// only guards against a table that loops.
	for range len(ups) {
		up, ok := upcasterFrom(ups, m.Name())
		if !ok {
			return m
		}
		m = up.Up(m)
	}
	return m
}

// CurrentName returns the wire name of the newest version of the event
// named name: name itself when no upcaster starts from it.
func CurrentName(name string) string {
	ups := Upcasters()
	for range len(ups) {
		up, ok := upcasterFrom(ups, name)
		if !ok {
			break
		}
		name = up.To
	}
	return name
}

func upcasterFrom(ups []Upcaster, name string) (Upcaster, bool) {
	for _, u := range ups {
		if u.From == name {
			return u, true
		}
	}
	return Upcaster{}, false
}
