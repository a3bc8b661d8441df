package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/millrace/millrace/platform/kafka"
)

func newTailCommand(getenv func(string) string, stdout io.Writer) *cobra.Command {
	var (
		k    kafkaFlags
		opts kafka.TailOptions
	)
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Print each CloudEvent on a topic as it arrives: type, key, id and data",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := kafka.Tail(cmd.Context(), k.config("millrace-tail"), args[0], opts,
				func(r kafka.Record) error {
					r.Format(stdout)
					return nil
				})
			if errors.Is(err, context.Canceled) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("tail %s: %w", args[0], err)
			}
			return nil
		},
	}
	bindKafkaFlags(cmd.Flags(), &k, getenv)
	cmd.Flags().BoolVar(&opts.FromBeginning, "from-beginning", false, "start at the oldest message instead of the newest")
	cmd.Flags().IntVarP(&opts.Limit, "limit", "n", 0, "stop after this many messages (0: until interrupted)")
	return cmd
}
