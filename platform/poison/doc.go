// Package poison is millrace's poison queue (a dead-letter queue): the
// durable record of messages a handler could not process, the Kafka topic
// they are announced on, and the tools to look at them, requeue them and
// drop them. It implements router.PoisonQueue for the router's stack.
//
// # What is kept
//
// A message that failed permanently, panicked or ran out of retries is
// written to a SQLite table (the Store, the source of truth for the tools)
// and published to the poison topic (millrace.poison) with its id, payload
// and CloudEvents headers unchanged, plus these headers:
//
//	x-poison-entry           the entry id in the store
//	x-poison-handler         the handler that failed
//	x-poison-topic           the topic the message was consumed from
//	x-poison-partition       its partition there (-1 when unknown)
//	x-poison-offset          its offset there (-1 when unknown)
//	x-poison-key             its partition key (ce_partitionkey)
//	x-poison-cause           permanent, retries-exhausted or panic
//	x-poison-reason          the error (for a panic: value and stack), at most 8 KiB
//	x-poison-attempts        how many times the handler was called with it
//	x-poison-first-error-at  when the first attempt failed (RFC 3339)
//	x-poison-last-error-at   when the last attempt failed (RFC 3339)
//
// # Order per key (sequences)
//
// Messages of one key (one aggregate) must be handled in order, so once a
// message of key K is poisoned for handler H, the later messages of K that
// reach H are parked behind it: stored, acked, not handled. Messages of
// other keys flow on. The open entries of (H, K), ordered by entry id, are
// the sequence of K, and its first open entry is the head. This is what
// Axon's sequenced dead-letter queue does. Messages without a key have no
// order to keep: each is poisoned on its own and parks nothing.
//
// An entry is open while its status is poisoned, parked or requeued, and
// resolved once handled or dropped. A key is blocked for its handler while
// its sequence has an open entry.
//
// # Requeue
//
// A requeue republishes the stored message to its original topic with its
// original id (so handlers that already applied it skip it) and three marker
// headers: x-poison-requeue-handler, x-poison-requeue-entry and
// x-poison-requeue-generation (the entry's requeue count). The entry becomes
// requeued. When the message comes back:
//
//   - a handler other than the one named ignores it (acks, does nothing): it
//     saw the original already;
//   - the named handler ignores it unless the entry is still requeued with
//     that generation (a stale or duplicate requeue);
//   - if an older entry of its sequence is still open, it is parked again
//     behind it;
//   - otherwise it is handled. Success resolves the entry as handled; failure
//     poisons it again (attempts add up) and it stays the head.
//
// Only the head of a sequence can be requeued alone. Requeuing a sequence
// requeues its head in sequence mode: each time a sequence-mode entry is
// handled, the next open entry of its sequence is requeued the same way,
// one after another, until the sequence is empty or an entry fails again.
// Messages of K that arrive meanwhile are parked at the end of the sequence
// and requeued in their turn, so nothing overtakes the requeued ones and the
// key unblocks only when its whole sequence is handled. Requeue all does
// this for every blocked key, and requeues every keyless entry.
//
// If the process stops between marking an entry requeued and publishing it,
// the entry stays requeued with nothing in flight: requeue it again (a
// requeued head may always be requeued; the old generation, should it
// arrive, is ignored).
//
// # Drop
//
// Dropping resolves an open entry without handling it, with a reason that is
// kept; dropped entries stay listed. Dropping the head of a sequence does not
// requeue the rest: requeue the sequence to let it through.
//
// # The look-up per message
//
// Admit runs for every message of every handler, and almost every key is
// not blocked. The Store answers that case from an in-memory index of the
// blocked keys, without a query, as long as nothing was committed to
// poison.db since the index was loaded, by this process or any other: it
// compares SQLite's WAL-index header, mapped from the -shm file, with the
// one the index was loaded at (index.go explains why that is exact). After
// a change the index is loaded again, at most every 50 ms; in between, and
// for keys the index says are blocked, Admit asks the table as before.
//
// # Scope
//
// A Store assumes its tables are written by this package alone; the admin
// API (AdminHandler) and the millrace poison command go through it. Handlers
// that share partitions across machines must share one store, since
// whichever instance consumes a key's partition must see that key's
// sequence; millrace dev runs one process with one store.
package poison
