package winrmexec

import (
	"encoding/xml"
	"regexp"
	"strconv"
	"strings"
)

// clixmlHeader starts what powershell.exe writes to stderr when its host is not
// interactive (-EncodedCommand over WinRM): the error records serialised as CLIXML.
const clixmlHeader = "#< CLIXML"

var escapeRE = regexp.MustCompile(`_x([0-9A-Fa-f]{4})_`)

// decodeCLIXML turns PowerShell's serialised error stream into the text a console shows
// (the error strings, _x000D__x000A_ escapes decoded); anything else is returned as it is.
func decodeCLIXML(s string) string {
	rest, ok := strings.CutPrefix(strings.TrimLeft(s, "\r\n"), clixmlHeader)
	if !ok {
		return s
	}
	dec := xml.NewDecoder(strings.NewReader(rest))
	var out strings.Builder
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "S" {
			continue
		}
		stream := ""
		for _, a := range se.Attr {
			if a.Name.Local == "S" {
				stream = a.Value
			}
		}
		var text string
		if err := dec.DecodeElement(&text, &se); err != nil {
			break
		}
		if stream != "Error" && stream != "Warning" {
			continue // progress and verbose records
		}
		out.WriteString(escapeRE.ReplaceAllStringFunc(text, func(m string) string {
			n, err := strconv.ParseUint(m[2:6], 16, 16)
			if err != nil {
				return m
			}
			return string(rune(n))
		}))
	}
	if out.Len() == 0 && strings.TrimSpace(rest) != "" && !strings.Contains(rest, "<Objs") {
		return s
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n")
}
