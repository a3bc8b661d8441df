package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// maxIdempotencyKey bounds the length of an Idempotency-Key.
const maxIdempotencyKey = 255

// idempotencyKeyNamespace is the UUIDv5 namespace of command ids derived
// from an Idempotency-Key. It is itself derived, so it is the same on every
// gateway instance and needs no mutable package state.
func idempotencyKeyNamespace() uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://millrace.dev/gateway/idempotency-key"))
}

// idempotencyKey returns the request's Idempotency-Key, if it has one: 1 to
// 255 printable ASCII characters.
func idempotencyKey(r *http.Request) (key string, ok bool, err error) {
	values := r.Header.Values("Idempotency-Key")
	if len(values) == 0 {
		return "", false, nil
	}
	if len(values) > 1 {
		return "", false, &paramError{name: "Idempotency-Key",
			detail: "The request has more than one Idempotency-Key header. Send exactly one."}
	}
	key = values[0]
	if len(key) == 0 || len(key) > maxIdempotencyKey {
		return "", false, &paramError{name: "Idempotency-Key",
			detail: fmt.Sprintf("The Idempotency-Key header is %d characters long. Send 1 to %d printable ASCII characters, e.g. a UUID.",
				len(key), maxIdempotencyKey)}
	}
	for i := range len(key) {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", false, &paramError{name: "Idempotency-Key",
				detail: fmt.Sprintf("The Idempotency-Key header has a non-printable or non-ASCII byte at position %d. Send 1 to %d printable ASCII characters, e.g. a UUID.",
					i, maxIdempotencyKey)}
		}
	}
	return key, true, nil
}

// newCommandID names a new command. With an Idempotency-Key the id is a
// UUIDv5 over method, path and key, so a retry reaching any gateway instance
// names the same command; without one it is a fresh, time-ordered UUIDv7.
func newCommandID(r *http.Request, key string, keyed bool) (uuid.UUID, error) {
	if keyed {
		name := r.Method + "\x00" + r.URL.Path + "\x00" + key
		return uuid.NewSHA1(idempotencyKeyNamespace(), []byte(name)), nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("make command id: %w", err)
	}
	return id, nil
}

// preferredWait reads the wait preference of RFC 7240 from the Prefer
// header values: how long the client will wait for the outcome, capped by
// limit. It reports false when the client asked for no wait (or for none
// that can be honoured), in which case the server answers at once.
func preferredWait(prefer []string, limit time.Duration) (time.Duration, bool) {
	for _, header := range prefer {
		for _, pref := range strings.Split(header, ",") {
			// A preference is token [= word] followed by ;parameters.
			head, _, _ := strings.Cut(pref, ";")
			name, value, hasValue := strings.Cut(head, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") || !hasValue {
				continue
			}
			value = strings.Trim(strings.TrimSpace(value), `"`)
			seconds, err := strconv.ParseInt(value, 10, 64)
			if err != nil || seconds <= 0 {
				// An unreadable preference is ignored (RFC 7240, section 2).
				continue
			}
			wait := limit
			if seconds < int64(limit/time.Second) {
				wait = time.Duration(seconds) * time.Second
			}
			if wait <= 0 {
				return 0, false
			}
			return wait, true
		}
	}
	return 0, false
}
