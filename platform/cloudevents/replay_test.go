package cloudevents_test

import (
	"context"
	"testing"

	"github.com/millrace/millrace/platform/cloudevents"
)

func TestReplayMark(t *testing.T) {
	type other struct{}
	tests := []struct {
		name string
		ctx  context.Context
		want bool
	}{
		{"a plain context is not a replay", context.Background(), false},
		{"a marked context is a replay", cloudevents.WithReplay(context.Background()), true},
		{"the mark survives derived contexts", context.WithValue(cloudevents.WithReplay(context.Background()), other{}, 1), true},
		{"an unrelated value is no mark", context.WithValue(context.Background(), other{}, true), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cloudevents.IsReplaying(tt.ctx); got != tt.want {
				t.Errorf("IsReplaying = %v, want %v", got, tt.want)
			}
		})
	}
}
