package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// E2EResult is one end-to-end run: commands sent at a steady rate, each
// followed from its 202 until its order is visible in the orders
// projection (GET /v1/orders/{id} answers 200).
type E2EResult struct {
	Sent, Visible, Failed int
	FirstError            string
	// Rate is the rate at which commands were accepted (202).
	Rate float64
	// Latency is accepted (202 received) to visible (first 200).
	Latency Latency
	// PeakRSS of millrace dev during the run.
	PeakRSS int64
}

// e2ePoll is how often a command's order is looked up until it is visible,
// for its first 100 ms: the resolution of the end-to-end figures. Later
// lookups are 20 ms apart, so that a system that falls behind is not buried
// under lookups as well.
const (
	e2ePoll     = 2 * time.Millisecond
	e2ePollSlow = 20 * time.Millisecond
)

// e2eMaxInFlight bounds the commands followed at once; a command due while
// that many are still not visible is not sent, and counts as failed.
const e2eMaxInFlight = 500

// endToEnd sends rate commands per second for d, open loop (a command is
// sent on schedule whether or not earlier ones are visible yet).
func endToEnd(ctx context.Context, base string, body []byte, rate int, d time.Duration) (E2EResult, error) {
	client := newClient(256)
	defer client.CloseIdleConnections()
	interval := time.Second / time.Duration(rate)
	n := int(d / interval)

	var (
		mu      sync.Mutex
		res     E2EResult
		samples = make([]time.Duration, 0, n)
		wg      sync.WaitGroup
	)
	fail := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if res.FirstError == "" {
			res.FirstError = msg
		}
	}
	slots := make(chan struct{}, e2eMaxInFlight)
	start := time.Now()
	var (
		lastAccepted time.Time
		nAccepted    int
	)
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			fail(fmt.Sprintf("%d commands not yet visible when the next was due", e2eMaxInFlight))
			continue
		}
		res.Sent++
		wg.Go(func() {
			defer func() { <-slots }()
			resource, accepted, err := postOrder(ctx, client, base, body)
			if err != nil {
				fail(err.Error())
				return
			}
			mu.Lock()
			nAccepted++
			if accepted.After(lastAccepted) {
				lastAccepted = accepted
			}
			mu.Unlock()
			visible, err := pollVisible(ctx, client, base+resource, accepted)
			if err != nil {
				fail(err.Error())
				return
			}
			mu.Lock()
			samples = append(samples, visible.Sub(accepted))
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Visible = len(samples)
	res.Latency = Percentiles(samples)
	if span := lastAccepted.Sub(start); span > 0 {
		res.Rate = float64(nAccepted) / span.Seconds()
	}
	return res, ctx.Err()
}

// postOrder places an order and returns its resource path and when the
// answer arrived: 202, or 201 when the order was placed before the gateway
// answered.
func postOrder(ctx context.Context, client *http.Client, base string, body []byte) (string, time.Time, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/orders", bytes.NewReader(body))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("post order: %w", err)
	}
	data, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	at := time.Now()
	switch {
	case err != nil:
		return "", at, fmt.Errorf("post order: read answer: %w", err)
	case resp.StatusCode == http.StatusCreated:
		// The order was placed before the gateway answered.
		if loc := resp.Header.Get("Location"); loc != "" {
			return loc, at, nil
		}
		return "", at, fmt.Errorf("post order: 201 without Location: %s", data)
	case resp.StatusCode != http.StatusAccepted:
		return "", at, fmt.Errorf("post order: status %d: %s", resp.StatusCode, data)
	}
	var a struct {
		Links struct {
			Resource string `json:"resource"`
		} `json:"links"`
	}
	if err := json.Unmarshal(data, &a); err != nil || a.Links.Resource == "" {
		return "", at, fmt.Errorf("post order: no links.resource in %s", data)
	}
	return a.Links.Resource, at, nil
}

// pollVisible GETs url until it answers 200, for at most 10 s after
// accepted: every e2ePoll for the first 100 ms, then every e2ePollSlow.
func pollVisible(ctx context.Context, client *http.Client, url string, accepted time.Time) (time.Time, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, err := do(ctx, client, http.MethodGet, url, "", nil)
		if status == http.StatusOK {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s not visible after 10 s (last status %d, error %v)", url, status, err)
		}
		every := e2ePoll
		if time.Since(accepted) > 100*time.Millisecond {
			every = e2ePollSlow
		}
		select {
		case <-time.After(every):
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}
