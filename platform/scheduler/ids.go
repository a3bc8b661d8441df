package scheduler

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// idNamespace is the UUIDv5 namespace of the scheduler's ids: the URL
// namespace's UUIDv5 of "https://millrace.dev/scheduler".
func idNamespace() uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://millrace.dev/scheduler"))
}

// CommandID is the id of the command a job publishes for a scheduled time,
// at one attempt (1 for the first): a UUIDv5 over the job's name, the time
// (in UTC, to the nanosecond) and, from the second attempt on, the attempt.
// Every instance computes the same id for the same firing, so that a
// firing published twice (by a leader that died and its successor) is
// handled once. The first attempt's id is also the run's id.
func CommandID(job string, scheduled time.Time, attempt int) string {
	name := job + "@" + scheduled.UTC().Format(time.RFC3339Nano)
	if attempt > 1 {
		name += "#" + strconv.Itoa(attempt)
	}
	return uuid.NewSHA1(idNamespace(), []byte(name)).String()
}

// manualRunID is the id of a run triggered by hand: a UUIDv5 over the job's
// name and the request's id, so that a request handled twice (by a leader
// that died and its successor) is one run.
func manualRunID(job, requestID string) string {
	return uuid.NewSHA1(idNamespace(), []byte(job+"!manual!"+requestID)).String()
}

// manualCommandID is the id of attempt n of a run triggered by hand.
func manualCommandID(job, requestID string, attempt int) string {
	if attempt <= 1 {
		return manualRunID(job, requestID)
	}
	return uuid.NewSHA1(idNamespace(), []byte(job+"!manual!"+requestID+"#"+strconv.Itoa(attempt))).String()
}

// skipID is the id of the record of skipped times starting at first.
func skipID(job string, first time.Time) string {
	return uuid.NewSHA1(idNamespace(), []byte(job+"@"+first.UTC().Format(time.RFC3339Nano)+"!skipped")).String()
}
