package gateway

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimit is one RateLimit rule in force: one bucket shared by every
// client, or one bucket per client.
type rateLimit struct {
	rule       RateLimit
	maxTracked int
	shared     *rate.Limiter   // without PerClient
	clients    *clientLimiters // with PerClient
}

func newRateLimit(rule RateLimit, maxTracked int) *rateLimit {
	l := &rateLimit{rule: rule, maxTracked: maxTracked}
	if rule.PerClient {
		l.clients = newClientLimiters(maxTracked, func() *rate.Limiter {
			return rate.NewLimiter(rate.Limit(rule.Rate), rule.Burst)
		})
	} else {
		l.shared = rate.NewLimiter(rate.Limit(rule.Rate), rule.Burst)
	}
	return l
}

func (l *rateLimit) applies(route string) bool {
	return l.rule.Route == AllRoutes || l.rule.Route == route
}

func (l *rateLimit) limiter(client string) *rate.Limiter {
	if l.clients != nil {
		return l.clients.get(client)
	}
	return l.shared
}

// verdict is what the rate limits decided for one request.
type verdict struct {
	ok bool
	// rule is the limit that refused the request, or, for an admitted
	// request, the one with the fewest tokens left; nil when no limit
	// applies.
	rule *RateLimit
	// remaining is the number of whole tokens rule has left.
	remaining int
	// retryAfter is how long until rule has a token again (refused only).
	retryAfter time.Duration
	// reset is how long until rule's bucket is full again.
	reset time.Duration
}

// admit takes one token from every limit that applies to the request, or
// none when any of them has no token left: the tokens reserved from the
// others are given back, so a refused request costs the client nothing.
func (lr *liveRules) admit(route, client string, now time.Time) verdict {
	v := verdict{ok: true}
	var refusedBy *rate.Limiter
	type taken struct {
		limit *rateLimit
		lim   *rate.Limiter
		res   *rate.Reservation
	}
	var held [4]taken
	reserved := held[:0]
	for _, l := range lr.limits {
		if !l.applies(route) {
			continue
		}
		lim := l.limiter(client)
		res := lim.ReserveN(now, 1)
		if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
			if v.ok || delay > v.retryAfter {
				v, refusedBy = verdict{ok: false, rule: &l.rule, retryAfter: delay}, lim
			}
		}
		reserved = append(reserved, taken{l, lim, res})
	}
	if !v.ok {
		for _, t := range reserved {
			t.res.CancelAt(now)
		}
		v.reset = untilFull(v.rule, refusedBy.TokensAt(now))
		return v
	}
	// Admitted: report the tightest limit, for the RateLimit-* headers.
	for _, t := range reserved {
		left := t.lim.TokensAt(now)
		if v.rule == nil || int(left) < v.remaining {
			v.rule, v.remaining = &t.limit.rule, int(math.Max(0, left))
			v.reset = untilFull(v.rule, left)
		}
	}
	return v
}

// untilFull is how long a bucket of rule with tokens left takes to fill.
func untilFull(rule *RateLimit, left float64) time.Duration {
	return time.Duration((float64(rule.Burst) - left) / rule.Rate * float64(time.Second))
}

// setHeaders writes the RateLimit-* fields of the tightest limit, in the
// form of draft-ietf-httpapi-ratelimit-headers-06: the bucket size, the
// whole requests left, and the seconds until the bucket is full again; and
// Retry-After, the seconds until the next request is admitted, on a
// refusal.
func (v verdict) setHeaders(h http.Header) {
	if v.rule == nil {
		return
	}
	h.Set("RateLimit-Limit", strconv.Itoa(v.rule.Burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(v.remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(v.reset)))
	if !v.ok {
		h.Set("Retry-After", strconv.Itoa(v.retryAfterSeconds()))
	}
}

// retryAfterSeconds is the Retry-After of a refusal: the wait for a token,
// rounded up to whole seconds, at least 1.
func (v verdict) retryAfterSeconds() int { return max(1, ceilSeconds(v.retryAfter)) }

// ceilSeconds rounds d up to whole seconds.
func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// maxClientIDLen bounds the client ids kept in memory: a longer header
// value is replaced by its SHA-256.
const maxClientIDLen = 64

// clientOf identifies the client of a request: its authenticated subject
// (auth.go) when it has one, else the value of the trusted id header when
// there is one, else the remote IP address.
func clientOf(r *http.Request, idHeader string) string {
	if sub, ok := authenticatedSubject(r); ok {
		if len(sub) > maxClientIDLen {
			sum := sha256.Sum256([]byte(sub))
			sub = hex.EncodeToString(sum[:])
		}
		return "sub:" + sub
	}
	if idHeader != "" {
		if id := r.Header.Get(idHeader); id != "" {
			if len(id) > maxClientIDLen {
				sum := sha256.Sum256([]byte(id))
				id = hex.EncodeToString(sum[:])
			}
			return "id:" + id
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "ip:" + host
}

// clientLimiters keeps one limiter per client, for at most max clients:
// when a new client comes and max are kept, the least recently seen one is
// forgotten. Forgetting a client that was idle long enough to refill its
// bucket changes nothing; forgetting one that was not gives it a full
// bucket again, which the bound on memory is worth. It is safe for
// concurrent use.
type clientLimiters struct {
	max        int
	newLimiter func() *rate.Limiter

	mu     sync.Mutex
	recent *list.List // of *clientLimiter, most recently seen first
	byID   map[string]*list.Element
}

type clientLimiter struct {
	id  string
	lim *rate.Limiter
}

func newClientLimiters(max int, newLimiter func() *rate.Limiter) *clientLimiters {
	return &clientLimiters{max: max, newLimiter: newLimiter, recent: list.New(), byID: make(map[string]*list.Element)}
}

// get returns the client's limiter, creating it with a full bucket for a
// client not seen (or forgotten).
func (c *clientLimiters) get(id string) *rate.Limiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[id]; ok {
		c.recent.MoveToFront(e)
		return e.Value.(*clientLimiter).lim
	}
	for c.recent.Len() >= c.max {
		oldest := c.recent.Back()
		c.recent.Remove(oldest)
		delete(c.byID, oldest.Value.(*clientLimiter).id)
	}
	cl := &clientLimiter{id: id, lim: c.newLimiter()}
	c.byID[id] = c.recent.PushFront(cl)
	return cl.lim
}
