package router

import (
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/time/rate"
)

// throttle limits how many messages the handler starts per second with a
// token bucket per handler (rule throttle: per_second, burst). A message
// that finds the bucket empty waits for its token; shutdown ends the wait
// and the message is nacked. Parked and skipped messages take no token.
func (s *Stack) throttle(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		d := deliveryOf(msg)
		if s.rulesFor(d.handler).Throttle.PerSecond <= 0 {
			// No limit: the bucket would hand out tokens without a wait,
			// at the cost of a reservation per message.
			return h(msg)
		}
		r := s.limiterFor(d.handler).Reserve()
		if wait := r.Delay(); wait > 0 {
			s.metrics.throttled.WithLabelValues(d.handler).Inc()
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				r.Cancel()
				return nil, ctx.Err()
			case <-timer.C:
			}
		}
		return h(msg)
	}
}

// limiterFor returns the handler's token bucket, creating it on first use.
func (s *Stack) limiterFor(handler string) *rate.Limiter {
	s.mu.RLock()
	l, ok := s.limiters[handler]
	s.mu.RUnlock()
	if ok {
		return l
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok = s.limiters[handler]
	if !ok {
		t := s.rulesFor(handler).Throttle
		l = rate.NewLimiter(rate.Inf, max(t.Burst, 1)) // starts with a full bucket
		setLimit(l, t)
		s.limiters[handler] = l
	}
	return l
}

// setLimit applies throttle rules to a token bucket, keeping its tokens.
func setLimit(l *rate.Limiter, t ThrottleRules) {
	if t.PerSecond <= 0 {
		l.SetLimit(rate.Inf)
		return
	}
	l.SetLimit(rate.Limit(t.PerSecond))
	l.SetBurst(max(t.Burst, 1))
}
