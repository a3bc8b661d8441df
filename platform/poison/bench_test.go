package poison_test

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/millrace/millrace/platform/router"
)

// BenchmarkAdmit measures the poison queue's look-up for a message whose
// key is not blocked, the common case, with 1000 other keys blocked: the
// in-memory index answers it while poison.db does not change.
func BenchmarkAdmit(b *testing.B) {
	s := openStoreB(b, filepath.Join(b.TempDir(), "poison.db"))
	ctx := b.Context()
	for i := range 1000 {
		if err := s.Poison(ctx, "orders", consumed("orders", "bad-"+strconv.Itoa(i), `{}`, i), failure("x")); err != nil {
			b.Fatal(err)
		}
	}
	msgs := make([]*message.Message, 1024)
	for i := range msgs {
		msgs[i] = consumed("orders", "key-"+strconv.Itoa(i), `{}`, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		adm, err := s.Admit(ctx, "orders", msgs[i%len(msgs)])
		if err != nil || adm != router.Handle {
			b.Fatalf("Admit = %v, %v; want Handle", adm, err)
		}
		i++
	}
}
