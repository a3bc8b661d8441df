// Package replay benchmarks rebuilding a projection from the log: how many
// events per second a rebuild applies, against how many a raw Sarama
// consumer reads from the same embedded broker in the same run, and how much
// memory the process holds before, during and after.
//
// It is a benchmark only; the test suite does not run it. Run it with
//
//	go test ./bench/replay -run '^$' -bench Rebuild -benchtime 1x -timeout 30m
//
// for 1,000,000 events, or fewer with MILLRACE_REPLAY_EVENTS=100000. It
// reports the CPU time of the process per event for the rebuild and for the
// raw reads (the figure a shared machine disturbs least);
// MILLRACE_REPLAY_CPUPROFILE=file writes a CPU profile of the rebuild alone,
// MILLRACE_REPLAY_MAX_BATCH=n sets the batch consumer's MaxBatch. The
// figures go into docs/benchmarks.md.
package replay
