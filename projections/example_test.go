package projections_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
	"github.com/millrace/millrace/projections"
)

// placedPerCurrency is a whole projection: it counts the orders placed per
// currency, in a table of its own per version (tx.Table).
type placedPerCurrency struct{}

func (placedPerCurrency) Name() string     { return "placedpercurrency" }
func (placedPerCurrency) Topics() []string { return []string{events.TopicOrderEvents} }

func (placedPerCurrency) Setup(ctx context.Context, tx *projections.Tx) error {
	_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+tx.Table("counts")+` (currency TEXT PRIMARY KEY, orders INTEGER NOT NULL)`)
	return err
}

func (placedPerCurrency) Apply(ctx context.Context, tx *projections.Tx, e projections.Event) error {
	// Both versions of OrderPlaced arrive as the current one.
	placed, ok := e.Data.(*events.OrderPlacedV2)
	if !ok {
		return nil // only OrderPlaced matters here
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO `+tx.Table("counts")+` (currency, orders) VALUES (?, 1)
		ON CONFLICT (currency) DO UPDATE SET orders = orders + 1`, placed.Currency)
	return err
}

// Example shows a projection run by a Runner. In millrace a Manager runs it:
// the runner's Handle on a Watermill router, subscribed to each topic under
// the consumer group r.GroupFor(topic), and rebuilds through a batch
// consumer; here messages are handed to it directly, with the metadata the
// Kafka subscriber sets. An old v1 event and a v2 event count alike.
func Example() {
	dir, err := os.MkdirTemp("", "projection-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "p.db")+"?_txlock=immediate&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	ctx := context.Background()
	r, err := projections.NewRunner(ctx, db, placedPerCurrency{}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("consumer group:", r.GroupFor(events.TopicOrderEvents))

	marshaler := cloudevents.Marshaler{Source: events.SourceOrders}
	for offset, currency := range []string{"EUR", "USD", "EUR"} {
		var placed events.Message = events.OrderPlacedV2{OrderID: fmt.Sprint("o-", offset), Currency: currency}
		if offset == 0 {
			placed = events.OrderPlaced{OrderID: "o-0", Currency: currency} // written before v2 existed
		}
		msg, err := marshaler.Marshal(placed)
		if err != nil {
			fmt.Println(err)
			return
		}
		msg.Metadata.Set(cloudevents.KafkaTopic, events.TopicOrderEvents)
		msg.Metadata.Set(cloudevents.KafkaPartition, "0")
		msg.Metadata.Set(cloudevents.KafkaOffset, fmt.Sprint(offset))
		if err := r.Handle(msg); err != nil {
			fmt.Println(err)
			return
		}
		if offset == 2 {
			// At-least-once delivery: the same message again changes nothing.
			if err := r.Handle(msg.Copy()); err != nil {
				fmt.Println(err)
				return
			}
		}
	}

	var eur int
	if err := db.QueryRow(`SELECT orders FROM ` + projections.Table("placedpercurrency", r.Version(), "counts") + ` WHERE currency = 'EUR'`).Scan(&eur); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("EUR orders:", eur)
	positions, err := r.Positions(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("positions: %+v\n", positions)
	// Output:
	// consumer group: projection.placedpercurrency.v1.orders.events
	// EUR orders: 2
	// positions: [{Topic:orders.events Partition:0 Offset:2}]
}
