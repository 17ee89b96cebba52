package store

// SetPlanCap changes the count above which List deems a condition common, so that tests
// on small data take every plan.
func SetPlanCap(s Store, n int) {
	if l, ok := s.(*sqliteStore); ok {
		s = l.sqlStore
	}
	s.(*sqlStore).planCap = n
}

// SetAnalyzeMin changes the fewest created CIs that make a PostgreSQL store analyze its
// tables, until the test ends.
func SetAnalyzeMin(t interface{ Cleanup(func()) }, n int64) {
	prev := analyzeMin
	analyzeMin = n
	t.Cleanup(func() { analyzeMin = prev })
}

// AnalyzeRuns reports the ANALYZE runs of a PostgreSQL store that completed and failed.
func AnalyzeRuns(s Store) (done, failed int64) {
	a := s.(*sqlStore).analyze
	return a.analyzed.Load(), a.failed.Load()
}
