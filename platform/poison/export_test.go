package poison

import "time"

// SetIndexReloadGap sets how soon the blocked index of s may load again
// after poison.db changed (minReloadGap outside tests).
func SetIndexReloadGap(s *Store, d time.Duration) {
	s.blocked.mu.Lock()
	defer s.blocked.mu.Unlock()
	s.blocked.reloadGap = d
}

// IndexAnswered is how many look-ups the blocked index of s answered
// without asking the table.
func IndexAnswered(s *Store) int64 {
	s.blocked.mu.Lock()
	defer s.blocked.mu.Unlock()
	return s.blocked.answered
}
