package router

import (
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of one message, the outcome label of millrace_handler_messages_total.
const (
	// OutcomeSuccess: the handler succeeded (perhaps after retries).
	OutcomeSuccess = "success"
	// OutcomePoisoned: the message failed for good and went to the poison queue.
	OutcomePoisoned = "poisoned"
	// OutcomeParked: the message waits in the poison queue behind an earlier
	// poisoned message of its key.
	OutcomeParked = "parked"
	// OutcomeSkipped: nothing to do (a duplicate, or a requeued message
	// meant for another handler).
	OutcomeSkipped = "skipped"
	// OutcomeNacked: the message was not settled (shutdown, or the poison
	// queue failed) and will be delivered again.
	OutcomeNacked = "nacked"
)

// metrics are the stack's Prometheus collectors, labelled by handler.
type metrics struct {
	handled     *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	poisoned    *prometheus.CounterVec
	parked      *prometheus.CounterVec
	throttled   *prometheus.CounterVec
	timeouts    *prometheus.CounterVec
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec

	// Children of handled and duration, cached: looking them up by label
	// values hashes the values on every message. Keys are handledKey and
	// handler names.
	handledChildren, durationChildren sync.Map
}

type handledKey struct{ handler, outcome string }

// handledFor returns the counter of handler's messages with outcome.
func (m *metrics) handledFor(handler, outcome string) prometheus.Counter {
	k := handledKey{handler, outcome}
	if c, ok := m.handledChildren.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.handledChildren.LoadOrStore(k, m.handled.WithLabelValues(handler, outcome))
	return c.(prometheus.Counter)
}

// durationFor returns the histogram of handler's message durations.
func (m *metrics) durationFor(handler string) prometheus.Observer {
	if o, ok := m.durationChildren.Load(handler); ok {
		return o.(prometheus.Observer)
	}
	o, _ := m.durationChildren.LoadOrStore(handler, m.duration.WithLabelValues(handler))
	return o.(prometheus.Observer)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_messages_total",
			Help: "Messages a handler finished, by outcome: success, poisoned, parked, skipped or nacked.",
		}, []string{"handler", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "millrace_handler_duration_seconds",
			Help:    "Time from a message reaching the handler's stack to its outcome, retries and breaker holds included.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"handler"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_retries_total",
			Help: "Retries of messages after a transient failure.",
		}, []string{"handler"}),
		poisoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_poisoned_total",
			Help: "Messages sent to the poison queue, by cause: permanent, retries-exhausted or panic.",
		}, []string{"handler", "cause"}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_parked_total",
			Help: "Messages parked behind an earlier poisoned message of their key.",
		}, []string{"handler"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_throttled_total",
			Help: "Messages that waited for the handler's throttle before starting.",
		}, []string{"handler"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_timeouts_total",
			Help: "Attempts cancelled by the handler's timeout.",
		}, []string{"handler"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "millrace_handler_breaker_state",
			Help: "State of the handler's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, []string{"handler"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "millrace_handler_breaker_transitions_total",
			Help: "Transitions of the handler's circuit breaker, by the state entered.",
		}, []string{"handler", "state"}),
	}
	for _, c := range []prometheus.Collector{m.handled, m.duration, m.retries, m.poisoned, m.parked, m.throttled, m.timeouts, m.state, m.transitions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register collector: %w", err)
		}
	}
	return m, nil
}

// measure is the outermost middleware: it puts the delivery every other
// middleware shares into the message context and, once the message has an
// outcome, counts it and observes how long it took.
func (s *Stack) measure(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		orig := msg.Context()
		d := &delivery{handler: handlerName(msg)}
		msg.SetContext(withDelivery(orig, d))
		start := time.Now()

		out, err := h(msg)

		switch {
		case err != nil:
			d.outcome = OutcomeNacked
		case d.outcome == "":
			d.outcome = OutcomeSuccess
		}
		s.metrics.handledFor(d.handler, d.outcome).Inc()
		s.metrics.durationFor(d.handler).Observe(time.Since(start).Seconds())
		msg.SetContext(orig)
		return out, err
	}
}
