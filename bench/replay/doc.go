// Package replay benchmarks rebuilding a projection from the log: how many
// events per second a rebuild applies, against how many a raw Sarama
// consumer reads from the same embedded broker in the same run, and how much
// memory the process holds before, during and after.
//
// It is a benchmark only; the test suite does not run it. Run it with
//
//	go test ./bench/replay -run '^$' -bench Rebuild -benchtime 1x -timeout 30m
//
// for 1,000,000 events, or fewer with MILLRACE_REPLAY_EVENTS=100000. The
// figures go into docs/benchmarks.md.
package replay
