package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/gorilla/mux"

	"github.com/millrace/millrace/platform/kafka"
)

// listeningMarker starts the line a server started by Serve prints once it
// accepts connections: "listening 127.0.0.1:PORT".
const listeningMarker = "listening "

// Serve runs one of the servers the harness measures, in this process,
// until ctx is done. args[0] is its kind:
//
//	bare                                the HTTP ceiling: read the body, answer 202
//	watermill -brokers B -topic T       the hand-written baseline: gorilla/mux, decode
//	                                    the order, one watermill-kafka Publish per request
//	broker -data-dir D                  a Kafka-protocol broker (kfake), persisted to D
//
// Every kind takes -addr (default 127.0.0.1:0) and prints
// "listening HOST:PORT" on stdout once it accepts connections.
func Serve(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("serve: name a kind: bare, watermill or broker")
	}
	kind := args[0]
	fs := flag.NewFlagSet("serve "+kind, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "loopback address to listen on")
	brokers := fs.String("brokers", "", "Kafka brokers, comma-separated (watermill)")
	topic := fs.String("topic", "bench.orders", "topic to publish to (watermill)")
	dataDir := fs.String("data-dir", "", "broker data directory (broker)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("serve %s: %w", kind, err)
	}
	switch kind {
	case "bare":
		return serveHTTP(ctx, *addr, stdout, bareHandler())
	case "watermill":
		h, closePub, err := watermillHandler(strings.Split(*brokers, ","), *topic)
		if err != nil {
			return fmt.Errorf("serve watermill: %w", err)
		}
		defer closePub()
		return serveHTTP(ctx, *addr, stdout, h)
	case "broker":
		b, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: *addr, DataDir: *dataDir})
		if err != nil {
			return fmt.Errorf("serve broker: %w", err)
		}
		defer b.Close()
		fmt.Fprintln(stdout, listeningMarker+b.Addrs()[0])
		<-ctx.Done()
		return nil
	default:
		return fmt.Errorf("serve: unknown kind %q, want bare, watermill or broker", kind)
	}
}

// serveHTTP serves h on addr until ctx is done, then shuts down.
func serveHTTP(ctx context.Context, addr string, stdout io.Writer, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintln(stdout, listeningMarker+ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http server: %w", err)
	}
	<-errc
	return nil
}

// bareHandler is the HTTP ceiling: it reads the request and answers 202.
func bareHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
}

// placeOrder is the order document as the hand-written baseline decodes it.
type placeOrder struct {
	UserID string `json:"user_id"`
	Lines  []struct {
		SKU            string `json:"sku"`
		Quantity       int    `json:"quantity"`
		UnitPriceCents int64  `json:"unit_price_cents"`
	} `json:"lines"`
	Currency string `json:"currency,omitempty"`
}

// watermillHandler is what a user writes by hand: a gorilla/mux route that
// decodes the order, checks it a little, and publishes it with a
// watermill-kafka Publisher (Watermill's default marshaler and Sarama
// configuration), one Publish per request, answering 202 once it returned.
func watermillHandler(brokers []string, topic string) (http.Handler, func(), error) {
	pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
		Brokers:   brokers,
		Marshaler: wmkafka.DefaultMarshaler{},
	}, watermill.NewSlogLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, nil, fmt.Errorf("create watermill-kafka publisher: %w", err)
	}
	r := mux.NewRouter()
	r.HandleFunc("/v1/orders", func(w http.ResponseWriter, r *http.Request) {
		var order placeOrder
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&order); err != nil {
			http.Error(w, "malformed order: "+err.Error(), http.StatusBadRequest)
			return
		}
		if order.UserID == "" || len(order.Lines) == 0 {
			http.Error(w, "an order needs a user_id and lines", http.StatusUnprocessableEntity)
			return
		}
		payload, err := json.Marshal(order)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		msg := message.NewMessage(watermill.NewUUID(), payload)
		if err := pub.Publish(topic, msg); err != nil {
			http.Error(w, "publish: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": msg.UUID})
	}).Methods(http.MethodPost)
	return r, func() { _ = pub.Close() }, nil
}
