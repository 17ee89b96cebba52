package store

// SetPlanCap changes the count above which List deems a condition common, so that tests
// on small data take every plan.
func SetPlanCap(s Store, n int) {
	if l, ok := s.(*sqliteStore); ok {
		s = l.sqlStore
	}
	s.(*sqlStore).planCap = n
}
