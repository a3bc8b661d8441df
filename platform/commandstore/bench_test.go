package commandstore_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/commandstore"
	"github.com/millrace/millrace/platform/sqlite"
)

// BenchmarkApply measures one command through the store: inbox check, load,
// save, one outbox row and the inbox row, committed on a SQLite file.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := commandstore.New(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	counters, err := commandstore.NewAggregate[counter, incremented](s, commandstore.AggregateConfig{
		Name: "counter", Handler: "counters", Topic: eventsTopic, Source: "/bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		msgCtx := cqrs.CtxWithOriginalMessage(ctx, message.NewMessage("m"+strconv.Itoa(i), nil))
		if err := counters.Apply(msgCtx, "c"+strconv.Itoa(i%100), increment); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}
