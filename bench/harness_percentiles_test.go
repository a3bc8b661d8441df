package bench_test

import (
	"testing"
	"time"

	"github.com/millrace/millrace/bench"
)

func TestPercentiles(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed: Percentiles sorts
	}
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		want    bench.Latency
	}{
		{"none", nil, bench.Latency{}},
		{"one", ms(7), bench.Latency{P50: 7 * time.Millisecond, P99: 7 * time.Millisecond, P999: 7 * time.Millisecond, Max: 7 * time.Millisecond, N: 1}},
		{"1..100 by nearest rank", ms(hundred...), bench.Latency{P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, P999: 100 * time.Millisecond, Max: 100 * time.Millisecond, N: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bench.Percentiles(tc.samples); got != tc.want {
				t.Errorf("Percentiles = %+v, want %+v", got, tc.want)
			}
		})
	}
}
