// Package queryapi is the query edge of the projections: an http.Handler
// that serves the read models as JSON under /query/v1/, for gateways that
// do not hold the projections themselves. gateway/upstream is its client:
// a gateway reads the same answers, and gets the same sentinel errors
// (orders.ErrNotFound, sales.ErrBadDate, …), whether its queries are
// in-process or go through this edge.
//
// Routes (all answers JSON; ids are path-escaped):
//
//	GET /query/v1/orders/{id}                 orders.Order
//	GET /query/v1/users/{id}/orders           UserOrders
//	GET /query/v1/reports/sales?date=D        sales.Day
//	GET /query/v1/users/{id}/notifications    UserNotifications
//	GET /query/v1/commands/{id}[?wait=2s]     Command; with wait, once the command is no longer pending or the wait is over
//	PUT /query/v1/commands/{id}               records an accepted command (AcceptRequest); 201 Command when new, 200 when known
//	GET /query/v1/projections/{name}/reached?position=T:P:O…[&wait=2s]
//	                                          Reached: whether the projection handled every position given; with wait, once it has or the wait is over
//
// Errors are an [Error] with a stable code; the status is 404 for a
// resource that does not exist, 400 for a malformed request, 500 for a
// failure of the edge. The PUT is idempotent (it only fills in what the
// log lacks), so a client may retry it like the GETs.
//
// The edge is internal: it exposes the command log's request digests,
// which the gateway needs to recognise retried requests, and it has no
// authentication of its own. Serve it on an internal network only.
//
// The notifications list is a reactor's table (handlers/notifications),
// served here because the gateway reads it like a read model.
package queryapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/millrace/millrace/handlers/notifications"
	"github.com/millrace/millrace/projections"
	"github.com/millrace/millrace/projections/commands"
	"github.com/millrace/millrace/projections/orders"
	"github.com/millrace/millrace/projections/sales"
)

// Prefix is the path prefix of every route.
const Prefix = "/query/v1/"

// OrderPath and the functions below build the path of each route, escaping
// ids.
func OrderPath(id string) string { return Prefix + "orders/" + url.PathEscape(id) }

// UserOrdersPath is the path of a user's orders.
func UserOrdersPath(userID string) string {
	return Prefix + "users/" + url.PathEscape(userID) + "/orders"
}

// SalesPath is the path of one day's sales report.
func SalesPath(date string) string { return Prefix + "reports/sales?date=" + url.QueryEscape(date) }

// NotificationsPath is the path of a user's notifications.
func NotificationsPath(userID string) string {
	return Prefix + "users/" + url.PathEscape(userID) + "/notifications"
}

// CommandPath is the path of a command's outcome; wait > 0 asks the edge
// to wait that long for it to complete.
func CommandPath(id string, wait time.Duration) string {
	p := Prefix + "commands/" + url.PathEscape(id)
	if wait > 0 {
		p += "?wait=" + url.QueryEscape(wait.String())
	}
	return p
}

// ReachedPath is the path that asks whether projection has handled every
// position given (read-your-writes); wait > 0 asks the edge to wait that
// long for it. A position is written topic:partition:offset.
func ReachedPath(projection string, positions []projections.Position, wait time.Duration) string {
	q := url.Values{}
	for _, p := range positions {
		q.Add("position", p.Topic+":"+strconv.FormatInt(int64(p.Partition), 10)+":"+strconv.FormatInt(p.Offset, 10))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return Prefix + "projections/" + url.PathEscape(projection) + "/reached?" + q.Encode()
}

// UserOrders is the answer of GET /query/v1/users/{id}/orders.
type UserOrders struct {
	UserID string           `json:"user_id"`
	Orders []orders.Summary `json:"orders"`
}

// UserNotifications is the answer of GET /query/v1/users/{id}/notifications.
type UserNotifications struct {
	UserID        string                       `json:"user_id"`
	Notifications []notifications.Notification `json:"notifications"`
}

// Command is a command's outcome with its request digest, which
// commands.Outcome keeps out of its public JSON.
type Command struct {
	commands.Outcome
	RequestHash string `json:"request_hash,omitempty"`
}

// AcceptRequest is the body of PUT /query/v1/commands/{id}: the fields of
// commands.Accepted except the id, which is in the path.
type AcceptRequest struct {
	Type        string    `json:"type"`
	AggregateID string    `json:"aggregate_id"`
	RequestHash string    `json:"request_hash"`
	AcceptedAt  time.Time `json:"accepted_at"`
}

// Reached is the answer of GET /query/v1/projections/{name}/reached.
type Reached struct {
	Projection string `json:"projection"`
	Reached    bool   `json:"reached"`
}

// Error is the body of every error answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes.
const (
	CodeOrderNotFound   = "order-not-found"   // 404, orders.ErrNotFound
	CodeUserNotFound    = "user-not-found"    // 404, orders.ErrUserNotFound
	CodeCommandNotFound = "command-not-found" // 404, commands.ErrNotFound
	// CodeProjectionNotFound: 404, the edge runs no projection of that
	// name (*projections.UnknownProjectionError).
	CodeProjectionNotFound = "projection-not-found"
	CodeBadDate            = "bad-date"    // 400, sales.ErrBadDate
	CodeBadRequest         = "bad-request" // 400, a malformed parameter or body
	CodeNoRoute            = "no-route"    // 404, the edge serves nothing at this path
	CodeInternal           = "internal"    // 500, the edge failed
)

// The read side the edge serves; the projection packages and the
// notifications reactor implement these. Each must be safe for concurrent
// use. The contexts are the requests'.

// OrderReader reads the orders projection (*orders.Projection).
type OrderReader interface {
	Order(ctx context.Context, id string) (orders.Order, error)
	UserOrders(ctx context.Context, userID string) ([]orders.Summary, error)
}

// SalesReader reads the sales projection (*sales.Projection).
type SalesReader interface {
	SalesOn(ctx context.Context, date string) (sales.Day, error)
}

// NotificationReader lists a user's notifications (*notifications.Reactor).
type NotificationReader interface {
	ForUser(ctx context.Context, userID string) ([]notifications.Notification, error)
}

// CommandLog is the command log (*commands.Projection).
type CommandLog interface {
	Accept(ctx context.Context, a commands.Accepted) (commands.Outcome, bool, error)
	Get(ctx context.Context, id string) (commands.Outcome, error)
	Wait(ctx context.Context, id string) (commands.Outcome, error)
}

// Progress tells how far the projections got (*projections.Manager).
type Progress interface {
	Reached(ctx context.Context, projection string, positions []projections.Position) (bool, error)
}

// ProgressNotifier is implemented by a Progress that says when to look
// again (*projections.Manager): a waiting progress query asks Reached after
// every commit it is told of, and on a timer for the others.
type ProgressNotifier interface {
	Advanced(projection string) <-chan struct{}
}

// Deps are what the edge serves. All are required; the edge owns none.
type Deps struct {
	Orders        OrderReader
	Sales         SalesReader
	Notifications NotificationReader
	Commands      CommandLog
	Progress      Progress
}

// DefaultMaxWait caps the wait parameter of GET /query/v1/commands/{id}.
const DefaultMaxWait = 30 * time.Second

// Config configures the edge. The zero value is usable.
type Config struct {
	// MaxWait caps how long a command query may wait. Default 30 s; keep
	// it below the server's write timeout.
	MaxWait time.Duration
	// Logger receives one record per internal error. Default: discard.
	Logger *slog.Logger
}

// Handler is the query edge. It is safe for concurrent use and holds no
// resources.
type Handler struct {
	cfg  Config
	deps Deps
	mux  *http.ServeMux
}

// New checks deps and builds the edge.
func New(cfg Config, deps Deps) (*Handler, error) {
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if deps.Orders == nil {
		errs = append(errs, errors.New("no order reader given"))
	}
	if deps.Sales == nil {
		errs = append(errs, errors.New("no sales reader given"))
	}
	if deps.Notifications == nil {
		errs = append(errs, errors.New("no notification reader given"))
	}
	if deps.Commands == nil {
		errs = append(errs, errors.New("no command log given"))
	}
	if deps.Progress == nil {
		errs = append(errs, errors.New("no projection progress given"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("build query edge: %w", err)
	}
	h := &Handler{cfg: cfg, deps: deps, mux: http.NewServeMux()}
	routes := map[string]func(*http.Request) (int, any, error){
		"GET " + Prefix + "orders/{id}":                h.order,
		"GET " + Prefix + "users/{id}/orders":          h.userOrders,
		"GET " + Prefix + "reports/sales":              h.sales,
		"GET " + Prefix + "users/{id}/notifications":   h.notifications,
		"GET " + Prefix + "commands/{id}":              h.command,
		"PUT " + Prefix + "commands/{id}":              h.accept,
		"GET " + Prefix + "projections/{name}/reached": h.reached,
	}
	for pattern, fn := range routes {
		h.mux.Handle(pattern, h.handle(fn))
	}
	h.mux.Handle(Prefix, h.handle(func(r *http.Request) (int, any, error) {
		return 0, nil, &requestError{status: http.StatusNotFound, code: CodeNoRoute,
			msg: fmt.Sprintf("the query edge serves nothing at %s %s", r.Method, r.URL.Path)}
	}))
	return h, nil
}

// ServeHTTP implements http.Handler. Mount it at Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// requestError is an answer other than 200 that is not the edge's fault.
type requestError struct {
	status int
	code   string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func (h *Handler) handle(fn func(*http.Request) (int, any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body, err := fn(r)
		if err != nil {
			status, body = h.errorBody(r, err)
		}
		b, encErr := marshal(body)
		if encErr != nil {
			h.cfg.Logger.ErrorContext(r.Context(), "encode query answer", "path", r.URL.Path, "error", encErr)
			status, b = http.StatusInternalServerError, []byte(`{"code":"internal","message":"encode answer"}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(status)
		_, _ = w.Write(b)
	})
}

// errorBody maps an error to its status and body, in one place.
func (h *Handler) errorBody(r *http.Request, err error) (int, Error) {
	var (
		re      *requestError
		unknown *projections.UnknownProjectionError
	)
	switch {
	case errors.As(err, &re):
		return re.status, Error{Code: re.code, Message: re.msg}
	case errors.As(err, &unknown):
		return http.StatusNotFound, Error{Code: CodeProjectionNotFound, Message: err.Error()}
	case errors.Is(err, orders.ErrNotFound):
		return http.StatusNotFound, Error{Code: CodeOrderNotFound, Message: err.Error()}
	case errors.Is(err, orders.ErrUserNotFound):
		return http.StatusNotFound, Error{Code: CodeUserNotFound, Message: err.Error()}
	case errors.Is(err, commands.ErrNotFound):
		return http.StatusNotFound, Error{Code: CodeCommandNotFound, Message: err.Error()}
	case errors.Is(err, sales.ErrBadDate):
		return http.StatusBadRequest, Error{Code: CodeBadDate, Message: err.Error()}
	default:
		h.cfg.Logger.ErrorContext(r.Context(), "query failed", "method", r.Method, "path", r.URL.Path, "error", err)
		return http.StatusInternalServerError, Error{Code: CodeInternal, Message: "the query edge failed to answer: " + err.Error()}
	}
}

func (h *Handler) order(r *http.Request) (int, any, error) {
	o, err := h.deps.Orders.Order(r.Context(), r.PathValue("id"))
	return http.StatusOK, o, err
}

func (h *Handler) userOrders(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	list, err := h.deps.Orders.UserOrders(r.Context(), id)
	if list == nil {
		list = []orders.Summary{}
	}
	return http.StatusOK, UserOrders{UserID: id, Orders: list}, err
}

func (h *Handler) sales(r *http.Request) (int, any, error) {
	dates := r.URL.Query()["date"]
	if len(dates) != 1 {
		return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest,
			msg: "give exactly one date parameter, YYYY-MM-DD"}
	}
	d, err := h.deps.Sales.SalesOn(r.Context(), dates[0])
	return http.StatusOK, d, err
}

func (h *Handler) notifications(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	list, err := h.deps.Notifications.ForUser(r.Context(), id)
	if list == nil {
		list = []notifications.Notification{}
	}
	return http.StatusOK, UserNotifications{UserID: id, Notifications: list}, err
}

func (h *Handler) command(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	raw := r.URL.Query().Get("wait")
	if raw == "" {
		o, err := h.deps.Commands.Get(r.Context(), id)
		return http.StatusOK, Command{Outcome: o, RequestHash: o.RequestHash}, err
	}
	wait, err := time.ParseDuration(raw)
	if err != nil || wait < 0 {
		return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest,
			msg: fmt.Sprintf("wait=%q: give a duration such as 2s", raw)}
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(wait, h.cfg.MaxWait))
	defer cancel()
	// Wait answers with the latest outcome when the wait runs out.
	o, err := h.deps.Commands.Wait(ctx, id)
	return http.StatusOK, Command{Outcome: o, RequestHash: o.RequestHash}, err
}

func (h *Handler) accept(r *http.Request) (int, any, error) {
	var req AcceptRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest,
			msg: "decode accepted command: " + err.Error()}
	}
	o, created, err := h.deps.Commands.Accept(r.Context(), commands.Accepted{
		CommandID: r.PathValue("id"), Type: req.Type, AggregateID: req.AggregateID,
		RequestHash: req.RequestHash, AcceptedAt: req.AcceptedAt,
	})
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return status, Command{Outcome: o, RequestHash: o.RequestHash}, err
}

// reachedPoll is how often a waiting progress query looks again.
const reachedPoll = 5 * time.Millisecond

func (h *Handler) reached(r *http.Request) (int, any, error) {
	name := r.PathValue("name")
	q := r.URL.Query()
	var positions []projections.Position
	for _, raw := range q["position"] {
		p, err := parsePosition(raw)
		if err != nil {
			return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest, msg: err.Error()}
		}
		positions = append(positions, p)
	}
	if len(positions) == 0 {
		return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest,
			msg: "give at least one position parameter, topic:partition:offset"}
	}
	var wait time.Duration
	if raw := q.Get("wait"); raw != "" {
		var err error
		if wait, err = time.ParseDuration(raw); err != nil || wait < 0 {
			return 0, nil, &requestError{status: http.StatusBadRequest, code: CodeBadRequest,
				msg: fmt.Sprintf("wait=%q: give a duration such as 2s", raw)}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(wait, h.cfg.MaxWait))
	defer cancel()
	notifier, _ := h.deps.Progress.(ProgressNotifier)
	tick := time.NewTicker(reachedPoll)
	defer tick.Stop()
	for {
		var advanced <-chan struct{} // nil: only the ticker
		if notifier != nil {
			advanced = notifier.Advanced(name) // before asking: a commit meanwhile is not missed
		}
		// Asked with the request's context: a wait that ran out still
		// gets one last look.
		ok, err := h.deps.Progress.Reached(r.Context(), name, positions)
		if err != nil || ok {
			return http.StatusOK, Reached{Projection: name, Reached: ok}, err
		}
		select {
		case <-ctx.Done():
			if err := r.Context().Err(); err != nil {
				return 0, nil, fmt.Errorf("wait for projection %s: %w", name, err)
			}
			return http.StatusOK, Reached{Projection: name, Reached: false}, nil
		case <-advanced:
		case <-tick.C:
		}
	}
}

// parsePosition reads topic:partition:offset. Kafka topic names have no
// colon ([a-zA-Z0-9._-]), so the last two colons split it.
func parsePosition(raw string) (projections.Position, error) {
	bad := func(why string) (projections.Position, error) {
		return projections.Position{}, fmt.Errorf("position=%q: %s; give topic:partition:offset, such as orders.events:0:42", raw, why)
	}
	rest, off, ok := cutLast(raw, ":")
	if !ok {
		return bad("no offset")
	}
	topic, part, ok := cutLast(rest, ":")
	if !ok || topic == "" {
		return bad("no topic or partition")
	}
	p, err := strconv.ParseInt(part, 10, 32)
	if err != nil || p < 0 {
		return bad("the partition is not a number of 0 or more")
	}
	o, err := strconv.ParseInt(off, 10, 64)
	if err != nil || o < 0 {
		return bad("the offset is not a number of 0 or more")
	}
	return projections.Position{Topic: topic, Partition: int32(p), Offset: o}, nil
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// marshal encodes v without HTML escaping, with a trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
