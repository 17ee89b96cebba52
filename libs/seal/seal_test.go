package seal

import (
	"encoding/base64"
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

// A box sealed with the pair's precomputed key is the xkeys box nkeys seals and opens: a
// bridge opens it with nkeys' own Open, boxes of the same pair reuse the key and differ
// (a fresh nonce each), and a recipient that is no curve key fails as nkeys' Seal does.
func TestSealPrecomputedIsAnXKeyBox(t *testing.T) {
	hub, _ := nkeys.CreateCurveKeys()
	hubPub, _ := hub.PublicKey()
	bridge, _ := nkeys.CreateCurveKeys()
	bp, _ := bridge.PublicKey()
	var boxes []string
	for i := range 3 {
		sc, err := Seal(hub, Secret{Name: "snmp-lab", Type: "snmp", Secret: "public-2", Probe: "p1"}, []string{bp})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(sc.Boxes[bp])
		if err != nil {
			t.Fatal(err)
		}
		plain, err := bridge.Open(raw, hubPub)
		if err != nil {
			t.Fatalf("seal %d: nkeys cannot open the box: %v", i, err)
		}
		if !strings.Contains(string(plain), "public-2") {
			t.Fatalf("seal %d opened to %q", i, plain)
		}
		boxes = append(boxes, sc.Boxes[bp])
	}
	if boxes[0] == boxes[1] || boxes[1] == boxes[2] {
		t.Error("two seals of one secret gave the same box: the nonce was reused")
	}
	pairKeys.Lock()
	_, cached := pairKeys.m[[2]string{hubPub, bp}]
	pairKeys.Unlock()
	if !cached {
		t.Error("the pair's key was not kept: every seal computes it again")
	}
	_, err := Seal(hub, Secret{Name: "x", Probe: "p1"}, []string{"UNOTACURVEKEY"})
	if err == nil || !strings.Contains(err.Error(), "seal x for UNOTACURVEKEY") {
		t.Errorf("a recipient that is no curve key: %v", err)
	}
}

// BenchmarkSealThreeBridges: one credential sealed to a site's three bridges, as a discovery
// run does for every probe of its SNMP sweep (4,094 for a /20).
func BenchmarkSealThreeBridges(b *testing.B) {
	hub, _ := nkeys.CreateCurveKeys()
	var rs []string
	for range 3 {
		k, _ := nkeys.CreateCurveKeys()
		p, _ := k.PublicKey()
		rs = append(rs, p)
	}
	for b.Loop() {
		if _, err := Seal(hub, Secret{Name: "snmp-lab", Type: "snmp", Secret: "public", Probe: "01M95EF8XA3ZHZBM2ZR2E10R5W"}, rs); err != nil {
			b.Fatal(err)
		}
	}
}
