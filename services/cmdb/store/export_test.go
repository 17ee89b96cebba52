package store

// SetPlanCap changes the count above which List deems a condition common, so that tests
// on small data take every plan.
func SetPlanCap(s Store, n int) { s.(*sqlStore).planCap = n }
