package gateway_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/gateway"
	"github.com/millrace/millrace/platform/auth"
)

// Every request is named by its route (metrics, traces, governance) and
// checked against the route's requirement, whether its route has path
// variables or not, and whatever its method.
func TestRouteAndRequirementOfRequests(t *testing.T) {
	e := newEnv(t)
	g, err := gateway.New(gateway.Config{}, e.deps())
	if err != nil {
		t.Fatal(err)
	}
	queries := auth.Scope(auth.ScopeQueriesRead)
	tests := []struct {
		method, path string
		route        string
		need         auth.Requirement
	}{
		{http.MethodPost, "/v1/orders", "/v1/orders", auth.Scope(gateway.CommandScope(events.PlaceOrder{}.Name()))},
		{http.MethodPost, "/v1/users", "/v1/users", auth.Scope(gateway.CommandScope(events.RegisterUser{}.Name()))},
		{http.MethodGet, "/v1/reports/sales", "/v1/reports/sales", queries},
		{http.MethodHead, "/v1/reports/sales", "/v1/reports/sales", queries},
		{http.MethodGet, "/healthz", "/healthz", auth.Public()},
		{http.MethodHead, "/healthz", "/healthz", auth.Public()},
		{http.MethodPost, "/v1/orders/abc/pay", "/v1/orders/{id}/pay", auth.Scope(gateway.CommandScope(events.PayOrder{}.Name()))},
		{http.MethodGet, "/v1/orders/abc", "/v1/orders/{id}", queries},
		{http.MethodHead, "/v1/users/abc/orders", "/v1/users/{id}/orders", queries},
		// No route: the method is not served, or the path is not.
		{http.MethodGet, "/v1/orders", "", auth.Authenticated()},
		{http.MethodDelete, "/v1/orders", "", auth.Authenticated()},
		{http.MethodPost, "/healthz", "", auth.Authenticated()},
		{http.MethodPost, "/v1/orders/", "", auth.Authenticated()},
		{http.MethodPost, "/v1/orders/abc/refund", "", auth.Authenticated()},
		{http.MethodGet, "/nope", "", auth.Authenticated()},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.path, nil)
			if got := g.Route(r); got != tc.route {
				t.Errorf("Route = %q, want %q", got, tc.route)
			}
			if got := g.Requirement(r); got != tc.need {
				t.Errorf("Requirement = %+v, want %+v", got, tc.need)
			}
		})
	}
}
