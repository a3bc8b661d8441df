package router

import "time"

// windowBuckets is how many buckets a sliding window is cut into: the
// window forgets its oldest tenth at a time.
const windowBuckets = 10

// window counts calls, failures and slow calls over a sliding window of
// time, in buckets (as Sentinel's LeapArray does). It is not safe for
// concurrent use: Breaker guards it.
type window struct {
	span    time.Duration // bucket length
	buckets [windowBuckets]bucket
}

type bucket struct {
	index               int64 // start time / span; identifies the bucket's turn
	calls, fails, slows int
}

func newWindow(length time.Duration) window {
	span := length / windowBuckets
	if span <= 0 {
		span = time.Millisecond
	}
	return window{span: span}
}

// add counts one call at now.
func (w *window) add(now time.Time, failed, slow bool) {
	idx := now.UnixNano() / int64(w.span)
	b := &w.buckets[idx%windowBuckets]
	if b.index != idx {
		*b = bucket{index: idx}
	}
	b.calls++
	if failed {
		b.fails++
	}
	if slow {
		b.slows++
	}
}

// sum returns the counts of the buckets still inside the window at now.
func (w *window) sum(now time.Time) (calls, fails, slows int) {
	idx := now.UnixNano() / int64(w.span)
	for _, b := range w.buckets {
		if b.calls > 0 && idx-b.index < windowBuckets {
			calls += b.calls
			fails += b.fails
			slows += b.slows
		}
	}
	return calls, fails, slows
}

func (w *window) reset() { w.buckets = [windowBuckets]bucket{} }
