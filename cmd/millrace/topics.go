package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/platform/kafka"
)

func newTopicsCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var k kafkaFlags
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "List topics with partitions and end offsets, and consumer groups with their lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ov, err := kafka.Inspect(cmd.Context(), k.config("millrace-topics"))
			if err != nil {
				return fmt.Errorf("inspect kafka at %v: %w", k.Brokers, err)
			}
			return ov.WriteTable(stdout)
		},
	}
	bindKafkaFlags(cmd.Flags(), &k, getenv)
	return cmd
}
