package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// E2EResult is one end-to-end run: commands sent at a steady rate, each
// followed from its 202 until its order is visible in the orders
// projection (GET /v1/orders/{id}?after=<command id> answers 200).
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

// e2eWait is the Prefer: wait of each read after a command: the gateway
// answers as soon as the read model has the order, or 503 when the wait ran
// out, and the harness asks again until e2eGiveUp after the 202.
const (
	e2eWait   = 5 * time.Second
	e2eGiveUp = 10 * time.Second
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
			resource, commandID, accepted, err := postOrder(ctx, client, base, body)
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
			visible, err := readAfter(ctx, client, base+resource, commandID, accepted)
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

// postOrder places an order and returns its resource path, its command id
// and when the answer arrived: 202, or 201 when the order was placed before
// the gateway answered.
func postOrder(ctx context.Context, client *http.Client, base string, body []byte) (resource, commandID string, at time.Time, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/orders", bytes.NewReader(body))
	if err != nil {
		return "", "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("post order: %w", err)
	}
	data, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	at = time.Now()
	switch {
	case err != nil:
		return "", "", at, fmt.Errorf("post order: read answer: %w", err)
	case resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusCreated:
		return "", "", at, fmt.Errorf("post order: status %d: %s", resp.StatusCode, data)
	}
	var a struct {
		CommandID string `json:"command_id"`
		Links     struct {
			Resource string `json:"resource"`
		} `json:"links"`
	}
	if err := json.Unmarshal(data, &a); err != nil || a.CommandID == "" {
		return "", "", at, fmt.Errorf("post order: no command_id in %s", data)
	}
	resource = a.Links.Resource
	if resource == "" {
		resource = resp.Header.Get("Location") // 201: the order was placed before the answer
	}
	if resource == "" {
		return "", "", at, fmt.Errorf("post order: no links.resource or Location in %d %s", resp.StatusCode, data)
	}
	return resource, a.CommandID, at, nil
}

// readAfter reads the order at url after its command (read-your-writes,
// ?after=<command id> with Prefer: wait): the gateway answers once the
// orders read model has handled the command's events, so that one request
// per order times when it became visible, to the moment, without lookups
// that load the gateway. A 503 (the wait ran out) asks again, for at most
// e2eGiveUp after accepted.
func readAfter(ctx context.Context, client *http.Client, url, commandID string, accepted time.Time) (time.Time, error) {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"?after="+commandID, nil)
		if err != nil {
			return time.Time{}, err
		}
		req.Header.Set("Prefer", "wait="+strconv.Itoa(int(e2eWait/time.Second)))
		resp, err := client.Do(req)
		status := 0
		if err == nil {
			status = resp.StatusCode
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		if status == http.StatusOK && err == nil {
			return time.Now(), nil
		}
		if ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if time.Since(accepted) > e2eGiveUp {
			return time.Time{}, fmt.Errorf("%s not visible %s after its 202 (last status %d, error %v)", url, e2eGiveUp, status, err)
		}
		if status != http.StatusServiceUnavailable {
			// Not the wait running out: do not hammer the gateway.
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			}
		}
	}
}
