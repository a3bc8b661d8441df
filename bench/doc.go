// Package bench is millrace's benchmark harness: it starts what it measures
// itself, on loopback, and measures it the same way, in one run.
//
// It compares, in alternating order within one run and as medians of
// several runs:
//
//   - command intake (POST /v1/orders until the broker acknowledged the
//     command) of `millrace gateway` publishing to a `millrace broker` that
//     nothing consumes from (the production intake shape, which the targets
//     are measured on) against the HTTP ceiling of this machine (a net/http
//     handler that only answers 202), the hand-written baseline (a
//     gorilla/mux handler calling a watermill-kafka Publisher per request)
//     and, in the full mode, Dapr's publish API with its Kafka pub/sub
//     component, both on the same broker; `millrace dev`, all in one
//     process with the pipeline behind its gateway, for reference; with
//     each server's CPU time per request;
//   - the event pipeline: events per second through a Watermill router
//     with millrace's whole governance stack against a raw Sarama consumer
//     group on the same broker;
//   - end to end: a command accepted by the gateway until the order is
//     visible in its projection, at a steady rate;
//   - footprint: `millrace dev` cold start to its first 202, idle RSS, and
//     RSS under load.
//
// Every server runs in a process of its own (the harness starts itself
// again for the ones it implements, see Serve), the load comes from a Go
// closed-loop generator with a fixed number of connections, and each run is
// bounded in time. [Run] writes the results as a Markdown table with the
// machine, the versions, the date and the targets of issue 6, each with
// pass or miss. The quick mode (seconds, no Dapr) runs in the test suite so
// that the harness cannot rot; the full mode is `make bench`.
package bench
