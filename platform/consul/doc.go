// Package consul is millrace's adapter to HashiCorp Consul, the registry of
// the many-machines deployment. It implements the discovery port
// (platform/discovery) on a Consul agent and adds a leader lock:
//
//   - [Registry] registers an HTTP edge with the local agent, with an HTTP
//     health check, tags, metadata and weights, deregisters it, and keeps the
//     registration alive: when the agent loses it (an agent restarted in dev
//     mode, a reaped critical instance) it registers it again.
//   - [Resolver] answers blocking queries on the health endpoint
//     (/v1/health/service/<name>?passing with WaitIndex), so that watchers
//     learn of changes as they happen instead of polling.
//   - [LeaderLock] runs a function on one process of the cluster at a time:
//     a session (TTL, lock-delay, optionally bound to the health check of
//     the process's own registration) acquires a KV key; losing the session
//     or the key cancels the leader's context.
//   - [Config] is the client configuration, read from the standard
//     CONSUL_* variables by [ConfigFromEnv]; [NewClient] builds the client.
//
// A request Consul refuses for lack of ACL permission (HTTP 403) fails with
// an error wrapping [ErrPermissionDenied] that says what was attempted and
// which permission the token needs.
//
// The agent binary for tests is Consul v1.14.11 (MPL-2.0), built from the Go
// module proxy by scripts/consul-agent.sh; package consultest starts it.
package consul
