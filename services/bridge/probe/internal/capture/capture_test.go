package capture

import (
	"encoding/base64"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestBuffer(t *testing.T) {
	b := NewBuffer(5)
	b.Write([]byte("héllo wörld"))
	bl := b.Blob(false)
	if bl.Text != "héll" || bl.Size != 13 || !bl.Truncated {
		t.Errorf("blob %+v: the cut é must not turn the text into base64", bl)
	}
	bin := Make([]byte{0, 1, 2, 0xff}, 4, false)
	if bin.Text != "" || bin.Base64 != "AAEC/w==" || bin.Truncated {
		t.Errorf("binary blob %+v", bin)
	}
}

// FuzzMake: a blob is text or base64 of what was kept, its JSON stays within twice the
// kept bytes (text) or base64's 4/3, and JSONLen counts what encoding/json writes.
func FuzzMake(f *testing.F) {
	f.Add([]byte("<html>\x00\"é"), 3)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		if cut < 0 || cut > len(b) {
			cut = len(b)
		}
		bl := Make(b[:cut], int64(len(b)), false)
		if bl.Truncated != (cut < len(b)) || !utf8.ValidString(bl.Text) {
			t.Fatalf("blob %+v", bl)
		}
		if bl.Base64 != "" {
			got, err := base64.StdEncoding.DecodeString(bl.Base64)
			if err != nil || string(got) != string(b[:cut]) {
				t.Fatal("base64 is not the kept bytes")
			}
		} else if len(bl.Text) > cut || string(b[:len(bl.Text)]) != bl.Text {
			t.Fatal("text is not a prefix of the kept bytes")
		}
		js, _ := json.Marshal(string(b))
		if utf8.Valid(b) && JSONLen(b) != len(js)-2 {
			t.Fatalf("JSONLen(%q) = %d, encoding/json wrote %d", b, JSONLen(b), len(js)-2)
		}
		if bl.Text != "" && JSONLen([]byte(bl.Text)) > 2*len(bl.Text) {
			t.Fatalf("text %q escapes to more than twice its size", bl.Text)
		}
	})
}
