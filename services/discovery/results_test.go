package discovery

import "testing"

func TestRefusedCredentialsFromMessage(t *testing.T) {
	m := refusedRE.FindStringSubmatch("127.77.120.3:22 refused every credential (ssh-1, ssh-2)")
	if m == nil || m[1] != "ssh-1, ssh-2" {
		t.Fatalf("%v", m)
	}
}
