package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Load is a closed-loop HTTP load: Connections workers, each sending its
// next request as soon as the previous one was answered. Requests sent
// during Warmup are not counted; the run then lasts Duration.
type Load struct {
	Method      string // POST when empty
	URL         string
	Body        []byte
	ContentType string // application/json when empty
	Connections int
	Warmup      time.Duration
	Duration    time.Duration
}

// LoadResult is what one Load run measured.
type LoadResult struct {
	OK         int           // requests answered 2xx during Duration
	Errors     int           // other statuses and transport failures during Duration
	FirstError string        // the first of them, for the report
	Elapsed    time.Duration // the measured window
	Latency    Latency       // of the OK requests
}

// RPS is the rate of successful requests.
func (r LoadResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Latency holds percentiles of a set of durations.
type Latency struct {
	P50, P99, P999, Max time.Duration
	N                   int
}

// Percentiles sorts samples (in place) and returns their percentiles, by
// the nearest-rank method: the exact sample, no bucketing.
func Percentiles(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(samples))+0.999999) - 1
		return samples[min(max(i, 0), len(samples)-1)]
	}
	return Latency{P50: at(0.50), P99: at(0.99), P999: at(0.999), Max: samples[len(samples)-1], N: len(samples)}
}

// newClient returns an HTTP client for loopback load: no proxy, no
// compression, and up to conns connections kept open to the one host.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// Run sends the load and returns what it measured. It returns early with
// what it has when ctx ends.
func (l Load) Run(ctx context.Context) (LoadResult, error) {
	if l.Connections < 1 || l.Duration <= 0 || l.URL == "" {
		return LoadResult{}, fmt.Errorf("run load on %s: connections, duration and URL are required", l.URL)
	}
	method, ctype := l.Method, l.ContentType
	if method == "" {
		method = http.MethodPost
	}
	if ctype == "" {
		ctype = "application/json"
	}
	client := newClient(l.Connections)
	defer client.CloseIdleConnections()

	begin := time.Now()
	from, until := begin.Add(l.Warmup), begin.Add(l.Warmup+l.Duration)
	workers := make([]loadWorker, l.Connections)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.samples = make([]time.Duration, 0, 4096)
		wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				if !start.Before(until) {
					return
				}
				status, err := do(ctx, client, method, l.URL, ctype, l.Body)
				elapsed := time.Since(start)
				if start.Before(from) {
					continue
				}
				switch {
				case err != nil && ctx.Err() != nil:
					return
				case err != nil:
					w.fail(err.Error())
				case status < 200 || status > 299:
					w.fail(fmt.Sprintf("status %d", status))
				default:
					w.samples = append(w.samples, elapsed)
				}
			}
		})
	}
	wg.Wait()

	res := LoadResult{Elapsed: min(time.Since(from), l.Duration)}
	var all []time.Duration
	for _, w := range workers {
		all = append(all, w.samples...)
		res.Errors += w.errors
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
	}
	res.OK = len(all)
	res.Latency = Percentiles(all)
	return res, ctx.Err()
}

// loadWorker is what one connection of a Load measured.
type loadWorker struct {
	samples  []time.Duration
	errors   int
	firstErr string
}

func (w *loadWorker) fail(msg string) {
	w.errors++
	if w.firstErr == "" {
		w.firstErr = msg
	}
}

// do sends one request and reads the whole answer.
func do(ctx context.Context, client *http.Client, method, url, ctype string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, err
}
