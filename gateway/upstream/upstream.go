// Package upstream is the gateway's client of the projection query edges
// (projections/queryapi) on other machines. It implements the gateway's
// read interfaces (OrderQueries, SalesQueries, Notifications, CommandLog,
// and Progress for read-your-writes),
// so the gateway is built the same way whether its projections are in the
// process or behind the network.
//
// It finds the healthy instances of the query service with blocking
// queries on a discovery resolver (platform/consul in production, the
// in-process discovery.Memory in tests): Run follows the registry and
// learns of every change as it happens, without polling. Each request goes
// to one instance chosen by smooth weighted round robin over the weights
// the instances registered with, so that over any run of requests an
// instance of weight 2 gets twice the requests of one of weight 1, evenly
// spread. A request that gets no answer (refused, reset, timed out) or a
// 5xx is retried on another instance (every request the client sends is
// idempotent: GETs, and the PUT that records an accepted command, which
// only fills in what is missing). Each instance has an outlier breaker
// (eapache/go-resiliency): EjectAfter failures without a failure-free
// CoolDown between them eject it for CoolDown; then one request tries it
// and a success brings it back.
//
// When the registry cannot be reached the client keeps using the last
// instances it knew, says so in Status and in the millrace_discovery_stale
// gauge, and catches up as soon as the registry answers again. An answer
// with no healthy instance at all does not replace known instances either
// (they are kept, marked stale): sending to instances that may have
// recovered beats failing every request at once.
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/eapache/go-resiliency/breaker"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/platform/discovery"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/queryapi"
	"github.com/millrace/millrace/projections/sales"
)

// ErrUnavailable is wrapped by the error of a query no instance answered.
// It is the gateway's own ErrReadsUnavailable, which the gateway answers with 503.
var ErrUnavailable = gateway.ErrReadsUnavailable

// DefaultService is the service name query edges register as.
const DefaultService = "millrace-query"

// Resolver finds the healthy instances of a service with blocking queries;
// discovery.Memory and consul.Resolver implement it (see
// discovery.Resolver for the contract).
type Resolver interface {
	Healthy(ctx context.Context, service string, index uint64) ([]discovery.Instance, uint64, error)
}

// Config configures a Client.
type Config struct {
	// Resolver finds the query edges. Required.
	Resolver Resolver
	// Service is the name the query edges register as. Default
	// millrace-query.
	Service string
	// HTTPClient sends the requests. Default: a client of its own with a
	// 2 s dial timeout and no overall timeout (AttemptTimeout bounds each
	// try).
	HTTPClient *http.Client
	// Attempts is how many instances one request may try. Default 3.
	Attempts int
	// AttemptTimeout bounds one try of a query (a command wait adds its
	// wait), and how long a query waits for the registry's first answer.
	// Default 5 s.
	AttemptTimeout time.Duration
	// EjectAfter failures of an instance without a failure-free CoolDown
	// between them eject it for CoolDown. Defaults 5 and 10 s.
	EjectAfter int
	CoolDown   time.Duration
	// RetryMin and RetryMax bound the backoff between failed queries of
	// the registry. Defaults 250 ms and 5 s.
	RetryMin, RetryMax time.Duration
	// MaxWait caps one wait at the edge (for a command, or for a
	// projection to reach a position); a longer wait asks again.
	// Default 30 s, as the edge's own cap.
	MaxWait time.Duration
	// Registerer receives the client's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives a record when the instances change and when the
	// registry becomes unreachable or reachable again. Default: discard.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Service == "" {
		c.Service = DefaultService
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if c.Attempts == 0 {
		c.Attempts = 3
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 5 * time.Second
	}
	if c.EjectAfter == 0 {
		c.EjectAfter = 5
	}
	if c.CoolDown == 0 {
		c.CoolDown = 10 * time.Second
	}
	if c.RetryMin == 0 {
		c.RetryMin = 250 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = queryapi.DefaultMaxWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Resolver == nil {
		errs = append(errs, errors.New("no resolver given"))
	}
	if c.Attempts < 1 {
		errs = append(errs, fmt.Errorf("attempts %d: want at least 1", c.Attempts))
	}
	if c.EjectAfter < 1 {
		errs = append(errs, fmt.Errorf("eject after %d failures: want at least 1", c.EjectAfter))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"attempt timeout", c.AttemptTimeout}, {"cool-down", c.CoolDown}, {"retry min", c.RetryMin}, {"retry max", c.RetryMax}, {"max wait", c.MaxWait}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.v))
		}
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("retry max %s is below retry min %s", c.RetryMax, c.RetryMin))
	}
	return errors.Join(errs...)
}

// Client reads projections from the healthy query edges. It is safe for
// concurrent use. Run must run for it to learn of instances; until the
// registry's first answer, queries wait up to AttemptTimeout.
type Client struct {
	cfg     Config
	ownHTTP bool // the client made its HTTP client, and closes its idle connections
	pool    *pool
	metrics *metrics
}

// New checks cfg and builds a client, registering its metrics.
func New(cfg Config) (*Client, error) {
	ownHTTP := cfg.HTTPClient == nil
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configure query upstream: %w", err)
	}
	p := newPool(cfg.Service, cfg.EjectAfter, cfg.CoolDown)
	m, err := newMetrics(p, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, ownHTTP: ownHTTP, pool: p, metrics: m}, nil
}

// Run follows the registry with blocking queries until ctx is done, and
// returns nil then. Failed queries are retried with backoff; meanwhile the
// client serves from the instances it knew. Queries sent after Run
// returned still work, from the instances known last.
func (c *Client) Run(ctx context.Context) error {
	if c.ownHTTP {
		defer c.cfg.HTTPClient.CloseIdleConnections()
	}
	log := c.cfg.Logger.With("service", c.cfg.Service)
	// A registry that answers at once again and again (it should block)
	// must not spin: at most 10 queries a second, in bursts of 5.
	limit := rate.NewLimiter(rate.Every(100*time.Millisecond), 5)
	backoff := c.cfg.RetryMin
	var (
		index      uint64
		lastReason string // of the last stale warning, not to repeat it
	)
	for {
		if err := limit.Wait(ctx); err != nil {
			return nil
		}
		list, next, err := c.cfg.Resolver.Healthy(ctx, c.cfg.Service, index)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.metrics.resolveErrors.WithLabelValues().Inc()
			if c.pool.failed(err, time.Now()) {
				known, _ := c.pool.size()
				log.Warn("registry unreachable; serving from the last known instances (retrying)", "instances", known, "error", err)
			}
			// Start over with a query that answers at once: the registry
			// may have restarted with lower indexes.
			index = 0
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(2*backoff, c.cfg.RetryMax)
			continue
		}
		backoff = c.cfg.RetryMin
		wasStale := c.pool.status().Stale
		changed := c.pool.update(list, time.Now())
		st := c.pool.status()
		ids := make([]string, 0, len(st.Instances))
		for _, in := range st.Instances {
			ids = append(ids, fmt.Sprintf("%s(w%d)", in.ID, in.Weight))
		}
		switch {
		case st.Stale && st.Reason != lastReason:
			log.Warn("instances not confirmed", "reason", st.Reason, "instances", ids)
			lastReason = st.Reason
		case st.Stale:
		case wasStale:
			log.Info("registry answers again; instances up to date", "instances", ids)
			lastReason = ""
		case changed:
			log.Info("instances changed", "instances", ids)
		}
		index = next
	}
}

// Status reports what the client knows of its service.
func (c *Client) Status() Status { return c.pool.status() }

// Order implements gateway.OrderQueries.
func (c *Client) Order(ctx context.Context, id string) (orders.Order, error) {
	var o orders.Order
	err := c.do(ctx, "read order "+id, http.MethodGet, queryapi.OrderPath(id), nil, 0, &o)
	return o, err
}

// UserOrders implements gateway.OrderQueries.
func (c *Client) UserOrders(ctx context.Context, userID string) ([]orders.Summary, error) {
	var body queryapi.UserOrders
	if err := c.do(ctx, "read orders of user "+userID, http.MethodGet, queryapi.UserOrdersPath(userID), nil, 0, &body); err != nil {
		return nil, err
	}
	return body.Orders, nil
}

// SalesOn implements gateway.SalesQueries.
func (c *Client) SalesOn(ctx context.Context, date string) (sales.Day, error) {
	var d sales.Day
	err := c.do(ctx, "read sales on "+date, http.MethodGet, queryapi.SalesPath(date), nil, 0, &d)
	return d, err
}

// ForUser implements gateway.Notifications.
func (c *Client) ForUser(ctx context.Context, userID string) ([]notifications.Notification, error) {
	var body queryapi.UserNotifications
	if err := c.do(ctx, "read notifications of user "+userID, http.MethodGet, queryapi.NotificationsPath(userID), nil, 0, &body); err != nil {
		return nil, err
	}
	return body.Notifications, nil
}

// Get implements gateway.CommandLog.
func (c *Client) Get(ctx context.Context, id string) (commands.Outcome, error) {
	return c.command(ctx, id, 0)
}

// Accept records an accepted command on the edge (PUT, idempotent, so it is
// retried like a read). The gateway no longer calls it: the command log
// learns of a command from the command topic (ce_requesthash carries the
// request's digest). It stays for clients that record commands themselves.
func (c *Client) Accept(ctx context.Context, a commands.Accepted) (commands.Outcome, bool, error) {
	body, err := json.Marshal(queryapi.AcceptRequest{
		Type: a.Type, AggregateID: a.AggregateID, RequestHash: a.RequestHash, AcceptedAt: a.AcceptedAt,
	})
	if err != nil {
		return commands.Outcome{}, false, fmt.Errorf("accept command %s: encode: %w", a.CommandID, err)
	}
	var cmd queryapi.Command
	status, err := c.send(ctx, "accept command "+a.CommandID, http.MethodPut, queryapi.CommandPath(a.CommandID, 0), body, 0, &cmd)
	if err != nil {
		return commands.Outcome{}, false, err
	}
	o := cmd.Outcome
	o.RequestHash = cmd.RequestHash
	return o, status == http.StatusCreated, nil
}

// Wait implements gateway.CommandLog: the edge waits for the outcome, for
// as long as ctx allows (less a margin for the answer to travel back), in
// turns of at most MaxWait. When ctx's deadline comes first it answers
// with the latest outcome known, or an error wrapping commands.ErrNotFound
// when the command was never known.
func (c *Client) Wait(ctx context.Context, id string) (commands.Outcome, error) {
	var latest *commands.Outcome
	for ctx.Err() == nil {
		// capped: this turn's wait ends at MaxWait, before ctx's deadline.
		wait, capped := c.waitBudget(ctx)
		if wait <= 0 {
			break
		}
		o, err := c.command(ctx, id, wait)
		switch {
		case ctx.Err() != nil:
			if err == nil {
				latest = &o
			}
		case errors.Is(err, commands.ErrNotFound) && capped:
			continue // wait for it to become known, as the log itself would
		case err != nil:
			return commands.Outcome{}, err
		case o.Status != commands.StatusPending || !capped:
			return o, nil
		default:
			latest = &o
			continue
		}
		break
	}
	if latest == nil {
		return commands.Outcome{}, fmt.Errorf("wait for command %s: %w", id, commands.ErrNotFound)
	}
	return *latest, nil
}

// waitBudget is how long the edge may wait within ctx: what is left of
// its deadline less a margin for the answer to travel back, at most
// MaxWait (capped then). Without a deadline it is MaxWait.
func (c *Client) waitBudget(ctx context.Context) (wait time.Duration, capped bool) {
	wait, capped = c.cfg.MaxWait, true
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if budget := left - min(left/5, 500*time.Millisecond); budget < wait {
			wait, capped = budget, false
		}
	}
	return wait, capped
}

// Reached implements gateway.Progress: whether the projection has handled
// every position given. When ctx has a deadline the edge waits for it,
// for as long as ctx allows (see waitBudget); without one it looks once.
func (c *Client) Reached(ctx context.Context, projection string, positions []projections.Position) (bool, error) {
	var wait time.Duration
	if _, ok := ctx.Deadline(); ok {
		wait, _ = c.waitBudget(ctx)
		wait = max(wait, 0)
	}
	var r queryapi.Reached
	if err := c.do(ctx, "read progress of projection "+projection, http.MethodGet,
		queryapi.ReachedPath(projection, positions, wait), nil, wait, &r); err != nil {
		return false, err
	}
	return r.Reached, nil
}

func (c *Client) command(ctx context.Context, id string, wait time.Duration) (commands.Outcome, error) {
	var cmd queryapi.Command
	if err := c.do(ctx, "read command "+id, http.MethodGet, queryapi.CommandPath(id, wait), nil, wait, &cmd); err != nil {
		return commands.Outcome{}, err
	}
	o := cmd.Outcome
	o.RequestHash = cmd.RequestHash
	return o, nil
}

func (c *Client) do(ctx context.Context, op, method, path string, body []byte, extra time.Duration, out any) error {
	_, err := c.send(ctx, op, method, path, body, extra, out)
	return err
}

// answer is one instance's answer, or why there was none.
type answer struct {
	status int
	body   []byte
	err    error // set when the instance failed: no answer, 5xx, no route
}

// send sends one request to up to Attempts instances, until one answers,
// decodes a 2xx into out and maps other answers to errors. extra lengthens
// the attempt timeout (a command wait). It returns the answer's status.
func (c *Client) send(ctx context.Context, op, method, path string, body []byte, extra time.Duration, out any) (int, error) {
	if err := c.pool.waitResolved(ctx, c.cfg.AttemptTimeout); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	tried := map[string]bool{}
	var lastErr error
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		ep := c.pool.pick(tried)
		if ep == nil {
			break
		}
		tried[ep.inst.ID] = true
		if attempt > 0 {
			c.metrics.retries.WithLabelValues().Inc()
		}
		var a answer
		before := ep.brk.GetState()
		err := ep.brk.Run(func() error {
			a = c.try(ctx, ep, method, path, body, c.cfg.AttemptTimeout+extra)
			if a.err != nil && ctx.Err() == nil {
				return a.err // the instance's fault: counts against it
			}
			return nil
		})
		if errors.Is(err, breaker.ErrBreakerOpen) {
			c.metrics.requests.WithLabelValues(ep.inst.ID, resultEjected).Inc()
			lastErr = fmt.Errorf("instance %s: %w", ep.inst.ID, err)
			continue
		}
		if before != breaker.Open && ep.brk.GetState() == breaker.Open {
			c.metrics.ejections.WithLabelValues(ep.inst.ID).Inc()
			c.cfg.Logger.Warn("instance ejected", "service", c.cfg.Service, "instance", ep.inst.ID,
				"cool_down", c.cfg.CoolDown, "error", a.err)
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if a.err != nil {
			result := resultError
			if a.status != 0 {
				result = resultServerError
			}
			c.metrics.requests.WithLabelValues(ep.inst.ID, result).Inc()
			lastErr = a.err
			continue
		}
		c.metrics.requests.WithLabelValues(ep.inst.ID, resultOK).Inc()
		return a.status, decode(op, ep.inst.ID, a, out)
	}
	if lastErr == nil {
		known, ejected := c.pool.size()
		lastErr = fmt.Errorf("%d instances known, %d of them ejected", known, ejected)
	}
	return 0, fmt.Errorf("%s: %w from %s after %d tries: %w", op, ErrUnavailable, c.cfg.Service, len(tried), lastErr)
}

// try sends the request to one instance.
func (c *Client) try(ctx context.Context, ep *endpoint, method, path string, body []byte, timeout time.Duration) answer {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	url := ep.base + path
	req, err := http.NewRequestWithContext(actx, method, url, rd)
	if err != nil {
		return answer{err: fmt.Errorf("build request %s %s: %w", method, url, err)}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return answer{err: fmt.Errorf("instance %s: %w", ep.inst.ID, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return answer{err: fmt.Errorf("instance %s: read answer: %w", ep.inst.ID, err)}
	}
	a := answer{status: resp.StatusCode, body: b}
	code := errorCode(b)
	switch {
	case resp.StatusCode >= 500:
		a.err = fmt.Errorf("instance %s answered %s: %s", ep.inst.ID, resp.Status, errorMessage(b))
	case resp.StatusCode == http.StatusNotFound && code != queryapi.CodeOrderNotFound &&
		code != queryapi.CodeUserNotFound && code != queryapi.CodeCommandNotFound &&
		code != queryapi.CodeProjectionNotFound:
		// Not an answer about the resource: the instance does not serve
		// this path (another version, or not a query edge at all).
		a.err = fmt.Errorf("instance %s does not serve %s %s (%s)", ep.inst.ID, method, path, errorMessage(b))
	}
	return a
}

// decode turns an answer into out or into the error the in-process read
// model would have returned.
func decode(op, instance string, a answer, out any) error {
	if a.status >= 200 && a.status < 300 {
		if err := json.Unmarshal(a.body, out); err != nil {
			return fmt.Errorf("%s: decode the answer of instance %s: %w", op, instance, err)
		}
		return nil
	}
	var sentinel error
	switch errorCode(a.body) {
	case queryapi.CodeOrderNotFound:
		sentinel = orders.ErrNotFound
	case queryapi.CodeUserNotFound:
		sentinel = orders.ErrUserNotFound
	case queryapi.CodeCommandNotFound:
		sentinel = commands.ErrNotFound
	case queryapi.CodeBadDate:
		sentinel = sales.ErrBadDate
	default:
		return fmt.Errorf("%s: instance %s answered %d: %s", op, instance, a.status, errorMessage(a.body))
	}
	return fmt.Errorf("%s: %w", op, sentinel)
}

func errorCode(body []byte) string {
	var e queryapi.Error
	_ = json.Unmarshal(body, &e)
	return e.Code
}

func errorMessage(body []byte) string {
	var e queryapi.Error
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return e.Message
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return string(bytes.TrimSpace(body))
}
