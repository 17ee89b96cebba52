package seal

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func TestSealOpen(t *testing.T) {
	hub, _ := nkeys.CreateCurveKeys()
	a, _ := nkeys.CreateCurveKeys()
	b, _ := nkeys.CreateCurveKeys()
	other, _ := nkeys.CreateCurveKeys()
	ap, _ := a.PublicKey()
	bp, _ := b.PublicKey()
	sc, err := Seal(hub, Secret{Name: "ssh-linux", Type: "ssh", Username: "root", Secret: "hunter2", Probe: "p1"}, []string{ap, bp})
	if err != nil {
		t.Fatal(err)
	}
	for _, box := range sc.Boxes {
		if strings.Contains(box, "hunter2") {
			t.Fatal("secret visible in the sealed form")
		}
	}
	for _, kp := range []nkeys.KeyPair{a, b} {
		s, err := Open(kp, sc, "p1")
		if err != nil || s.Secret != "hunter2" || s.Username != "root" {
			t.Fatalf("open: %+v %v", s, err)
		}
	}
	if _, err := Open(other, sc, "p1"); !errors.Is(err, ErrNotForUs) {
		t.Fatalf("a bridge without a box opened it: %v", err)
	}
	if _, err := Open(a, sc, "p2"); err == nil {
		t.Fatal("a copy replayed into another probe was accepted")
	}
}
