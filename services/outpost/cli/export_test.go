package cli

// HasCommand says whether `outpost <path...>` is a command (tests).
func HasCommand(path ...string) bool {
	root := newRoot(&globals{})
	c, rest, err := root.Find(path)
	return err == nil && len(rest) == 0 && c != root
}

// SetPageSize sets the page size the list commands ask for and returns the old one (tests).
func SetPageSize(n int) int {
	old := pageSize
	pageSize = n
	return old
}

// ProgressBar is the bar of `discover --wait` on a terminal (tests).
var ProgressBar = progressBar
