package consul

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/consul/api"
)

// ErrPermissionDenied is wrapped by the error of every request Consul
// refused with 403: the ACL token (CONSUL_HTTP_TOKEN) lacks a permission.
var ErrPermissionDenied = errors.New("the ACL token lacks permission")

// describe wraps err from the Consul request op. A 403 says plainly that
// the token lacks the permission need, with Consul's own words.
func describe(op, need string, err error) error {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return fmt.Errorf("%s: consul refused it (403 %q): %w; the token in %s needs %s",
			op, se.Body, ErrPermissionDenied, EnvHTTPToken, need)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// isNotFound reports a 404 from Consul.
func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
