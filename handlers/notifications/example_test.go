package notifications_test

import (
	"context"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/millrace/millrace/events"
	"github.com/millrace/millrace/platform/cloudevents"
)

// Adding a reactor: a typed function per event it cares about, registered as
// one handler group on the events topic. Here the pub/sub is an in-process
// gochannel; in millrace it is Kafka, with the same code.
func Example_addHandler() {
	pubSub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer pubSub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		fmt.Println(err)
		return
	}
	marshaler := cloudevents.Marshaler{Source: events.SourceOrders}
	processor, err := cqrs.NewEventGroupProcessorWithConfig(router, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			return events.TopicOrderEvents, nil
		},
		SubscriberConstructor: func(cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubSub, nil
		},
		AckOnUnknownEvent: true, // other events on the topic are not ours
		Marshaler:         marshaler,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The handler: a typed function, told which event it got.
	handled := make(chan struct{})
	err = processor.AddHandlersGroup("loyalty-points",
		cqrs.NewGroupEventHandler(func(ctx context.Context, e *events.OrderPlacedV2) error {
			fmt.Printf("user %s earns %d points for order %s\n", e.UserID, e.TotalCents/100, e.OrderID)
			close(handled)
			return nil
		}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}

	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	defer func() { router.Close(); <-done }()

	msg, err := marshaler.Marshal(events.OrderPlacedV2{OrderID: "o-1", UserID: "u-1", ItemCount: 2, TotalCents: 4250, Currency: "EUR"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := pubSub.Publish(events.TopicOrderEvents, msg); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		fmt.Println("the event was not handled")
	}
	// Output: user u-1 earns 42 points for order o-1
}
