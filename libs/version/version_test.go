package version

import "testing"

// Services register with NATS micro and validate their version as semver: whatever git
// describe says (an untagged hash can be all digits with a leading zero), Semver is valid.
func TestSemverIsAlwaysValid(t *testing.T) {
	for in, want := range map[string]string{
		"dev": "0.0.0-dev", "": "0.0.0-dev", "v1.2.3": "1.2.3", "1.2.3-rc.1": "1.2.3-rc.1",
		"0092912": "0.0.0-g0092912", "c088aa5-dirty": "0.0.0-c088aa5-dirty", "3d045c4": "0.0.0-g3d045c4",
	} {
		Version = in
		got := Semver()
		if got != want || !semver.MatchString(got) {
			t.Errorf("Semver(%q) = %q, want %q", in, got, want)
		}
	}
	Version = "dev"
}
