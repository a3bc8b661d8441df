package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// millraceDev is a running `millrace dev` with its embedded broker.
type millraceDev struct {
	*proc
	base   string // http://127.0.0.1:PORT
	broker string // the embedded broker, host:port
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// emptyDataDir returns the data directory of the server name, under the
// work directory, emptied of what an earlier run left.
func emptyDataDir(cfg Config, name string) (string, error) {
	data := filepath.Join(cfg.WorkDir, name+"-data")
	if err := os.RemoveAll(data); err != nil {
		return "", fmt.Errorf("clear %s: %w", data, err)
	}
	return data, nil
}

// startMillrace starts `millrace dev` on an empty data directory, with its
// broker embedded, both on free loopback ports. It returns at once; use
// firstAccepted or waitLine to know when it serves.
func startMillrace(cfg Config, name string) (*millraceDev, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	data, err := emptyDataDir(cfg, name)
	if err != nil {
		return nil, err
	}
	p, err := startProc(name, cfg.WorkDir, cfg.Millrace, []string{
		"dev", "--data-dir", data, "--http-addr", httpAddr, "--kafka-addr", kafkaAddr, "--log-level", "warn",
	}, []string{"OTEL_SDK_DISABLED=true", "CONSUL_HTTP_ADDR="})
	if err != nil {
		return nil, err
	}
	return &millraceDev{proc: p, base: "http://" + httpAddr, broker: kafkaAddr}, nil
}

// OrderBody is the valid PlaceOrder request the intake load sends, for
// userID.
func OrderBody(userID string) []byte {
	b, _ := json.Marshal(map[string]any{
		"user_id":  userID,
		"currency": "EUR",
		"lines": []map[string]any{
			{"sku": "tea-assam", "quantity": 2, "unit_price_cents": 450},
			{"sku": "mug", "quantity": 1, "unit_price_cents": 1200},
		},
	})
	return b
}

// firstAccepted sends POST /v1/orders every millisecond until one is
// answered 202, and returns when that was.
func (m *millraceDev) firstAccepted(ctx context.Context) (time.Time, error) {
	client := newClient(1)
	defer client.CloseIdleConnections()
	body := OrderBody(uuid.NewString())
	var last string
	for {
		status, err := do(ctx, client, http.MethodPost, m.base+"/v1/orders", "application/json", body)
		if status == http.StatusAccepted {
			return time.Now(), nil
		}
		last = fmt.Sprintf("status %d, error %v", status, err)
		select {
		case <-m.done:
			return time.Time{}, fmt.Errorf("millrace dev exited before serving a 202: %s", m.tail())
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no 202 from millrace dev (last: %s): %w: %s", last, ctx.Err(), m.tail())
		case <-time.After(time.Millisecond):
		}
	}
}

// registerUser registers a user and waits until the command succeeded, so
// that orders of the user are placed, not rejected.
func (m *millraceDev) registerUser(ctx context.Context) (string, error) {
	id := uuid.NewString()
	body, _ := json.Marshal(map[string]string{"email": "bench-" + id[:8] + "@example.com", "name": "Bench"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+"/v1/users", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "wait=10")
	resp, err := newClient(1).Do(req)
	if err != nil {
		return "", fmt.Errorf("register a user: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("register a user: status %d: %s", resp.StatusCode, data)
	}
	var outcome struct {
		AggregateID string `json:"aggregate_id"`
	}
	if err := json.Unmarshal(data, &outcome); err != nil || outcome.AggregateID == "" {
		return "", fmt.Errorf("register a user: no aggregate_id in %s", data)
	}
	return outcome.AggregateID, nil
}

// measureColdStarts starts `millrace dev` on an empty data directory
// cfg.ColdStarts times: time to the first 202, and RSS once idle.
func measureColdStarts(ctx context.Context, cfg Config, res *Results) error {
	for i := range cfg.ColdStarts {
		m, err := startMillrace(cfg, "millrace-cold-"+strconv.Itoa(i))
		if err != nil {
			return err
		}
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		at, err := m.firstAccepted(sctx)
		cancel()
		if err != nil {
			_ = m.stop(10 * time.Second)
			return err
		}
		res.ColdStart = append(res.ColdStart, at.Sub(m.started))
		// Idle: consumers running, nothing to do.
		if _, _, err := m.waitLine(ctx, "millrace dev is ready"); err != nil {
			_ = m.stop(10 * time.Second)
			return err
		}
		idle := 3 * time.Second
		if cfg.Quick {
			idle = 500 * time.Millisecond
		}
		select {
		case <-time.After(idle):
		case <-ctx.Done():
		}
		rss, err := m.rss()
		if err != nil {
			_ = m.stop(10 * time.Second)
			return err
		}
		res.IdleRSS = append(res.IdleRSS, rss)
		if err := m.stop(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}
