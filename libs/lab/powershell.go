package lab

import (
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The lab's PowerShell: enough of Windows PowerShell 5.1 for what inventory scripts ask a
// Windows server, printed as PowerShell prints it. Statements (separated by ; or new
// lines), $variables, pipelines, [ordered]@{ key = pipeline } hashtables, @( ) arrays,
// 'strings', numbers, a..b ranges; the cmdlets Get-CimInstance/Get-WmiObject (-ClassName,
// -Filter 'Prop=Value') of Win32_BIOS, Win32_ComputerSystem, Win32_OperatingSystem,
// Win32_Processor, Win32_LogicalDisk, Win32_NetworkAdapterConfiguration; Get-ItemProperty
// of the registry's Uninstall keys; Get-Service; Get-NetTCPConnection; Select-Object,
// Where-Object, Sort-Object, Format-List, Format-Table, ConvertTo-Json (5.1's layout: four
// spaces, two after the colon, \/Date()\/, enums as numbers), Out-String, Write-Output,
// Write-Error, Start-Sleep, hostname, exit. Anything else is CommandNotFoundException, in
// CLIXML on stderr, exit code 1.

// psObject is an object with ordered properties; class picks the default view.
type psObject struct {
	class string
	props []psProp
}

type psProp struct {
	name string
	val  any
}

func (o *psObject) get(name string) (any, bool) {
	for _, p := range o.props {
		if strings.EqualFold(p.name, name) {
			return p.val, true
		}
	}
	return nil, false
}

func obj(class string, kv ...any) *psObject {
	o := &psObject{class: class}
	for i := 0; i+1 < len(kv); i += 2 {
		o.props = append(o.props, psProp{kv[i].(string), kv[i+1]})
	}
	return o
}

// psEnum prints as its name and serialises to JSON as its number, as .NET enums do.
type psEnum struct {
	name string
	val  int
}

// psDateTime is a System.DateTime.
type psDateTime time.Time

// psArray keeps an @( ) an array where PowerShell would unroll one element.
type psArray []any

// psText is formatted output (Format-List, Format-Table, ConvertTo-Json lines).
type psText string

// defaultViews are the properties PowerShell's format data shows for a CIM class.
var defaultViews = map[string][]string{
	"Win32_BIOS":                        {"SMBIOSBIOSVersion", "Manufacturer", "Name", "SerialNumber", "Version"},
	"Win32_ComputerSystem":              {"Name", "PrimaryOwnerName", "Domain", "TotalPhysicalMemory", "Model", "Manufacturer"},
	"Win32_OperatingSystem":             {"SystemDirectory", "Organization", "BuildNumber", "RegisteredUser", "SerialNumber", "Version"},
	"Win32_Processor":                   {"DeviceID", "Name", "Caption", "MaxClockSpeed", "SocketDesignation", "Manufacturer"},
	"Win32_LogicalDisk":                 {"DeviceID", "DriveType", "ProviderName", "VolumeName", "Size", "FreeSpace"},
	"Win32_NetworkAdapterConfiguration": {"DHCPEnabled", "IPAddress", "DefaultIPGateway", "DNSDomain", "ServiceName", "Description", "Index"},
	"ServiceController":                 {"Status", "Name", "DisplayName"},
	"MSFT_NetTCPConnection":             {"LocalAddress", "LocalPort", "RemoteAddress", "RemotePort", "State", "AppliedSetting", "OwningProcess"},
}

// cim returns the instances of a CIM class on h.
func cim(h *host, class string) ([]*psObject, bool) {
	w := h.win
	var out []*psObject
	switch strings.ToLower(class) {
	case "win32_bios":
		out = append(out, obj("Win32_BIOS", "SMBIOSBIOSVersion", w.biosVer, "Manufacturer", biosVendor(h), "Name", w.biosVer,
			"SerialNumber", h.m.Serial, "Version", "INTEL  - 6040000", "ReleaseDate", psDateTime(w.install.AddDate(-1, 0, 0))))
	case "win32_computersystem":
		out = append(out, obj("Win32_ComputerSystem", "Name", w.netbios, "PrimaryOwnerName", "Windows User", "Domain", w.workgroup,
			"PartOfDomain", false, "TotalPhysicalMemory", w.memBytes, "Model", h.m.Model, "Manufacturer", h.m.Vendor,
			"NumberOfProcessors", int64(w.sockets), "NumberOfLogicalProcessors", int64(w.sockets*w.logical), "SystemType", "x64-based PC",
			"DNSHostName", strings.ToLower(h.name)))
	case "win32_operatingsystem":
		out = append(out, obj("Win32_OperatingSystem", "SystemDirectory", `C:\Windows\system32`, "Organization", "", "BuildNumber", w.build,
			"RegisteredUser", "Windows User", "SerialNumber", "00454-60000-00001-AA"+w.build[len(w.build)-3:], "Version", w.version,
			"Caption", w.caption, "OSArchitecture", "64-bit", "CSName", w.netbios, "InstallDate", psDateTime(w.install),
			"LastBootUpTime", psDateTime(w.boot), "TotalVisibleMemorySize", w.memBytes/1024, "ServicePackMajorVersion", int64(0)))
	case "win32_processor":
		for i := range w.sockets {
			out = append(out, obj("Win32_Processor", "DeviceID", fmt.Sprintf("CPU%d", i), "Name", w.cpuModel,
				"Caption", "Intel64 Family 6 Model 106 Stepping 6", "MaxClockSpeed", int64(w.mhz), "SocketDesignation", fmt.Sprintf("CPU %d", i),
				"Manufacturer", "GenuineIntel", "NumberOfCores", int64(w.cores), "NumberOfLogicalProcessors", int64(w.logical)))
		}
	case "win32_logicaldisk":
		for _, d := range w.disks {
			out = append(out, obj("Win32_LogicalDisk", "DeviceID", d.DeviceID, "DriveType", int64(3), "ProviderName", nil,
				"VolumeName", d.VolumeName, "Size", d.SizeBytes, "FreeSpace", d.FreeBytes, "FileSystem", d.FileSystem))
		}
		// the virtual DVD drive every VM template has: DriveType 5, no size
		letter := string(rune('D' + len(w.disks) - 1))
		out = append(out, obj("Win32_LogicalDisk", "DeviceID", letter+":", "DriveType", int64(5), "ProviderName", nil,
			"VolumeName", nil, "Size", nil, "FreeSpace", nil, "FileSystem", nil))
	case "win32_networkadapterconfiguration":
		out = append(out, obj("Win32_NetworkAdapterConfiguration", "DHCPEnabled", false,
			"IPAddress", []any{w.addr.Addr().String(), "fe80::" + strings.ToLower(strings.ReplaceAll(w.mac[12:], ":", "")) + ":1"},
			"DefaultIPGateway", []any{gatewayOf(w)}, "DNSDomain", nil, "ServiceName", "vmxnet3ndis6", "Description", w.nicDescr, "Index", int64(7),
			"IPEnabled", true, "MACAddress", w.mac, "IPSubnet", []any{maskOf(w.addr.Bits()), "64"}))
		out = append(out, obj("Win32_NetworkAdapterConfiguration", "DHCPEnabled", false, "IPAddress", nil, "DefaultIPGateway", nil,
			"DNSDomain", nil, "ServiceName", "kdnic", "Description", "Microsoft Kernel Debug Network Adapter", "Index", int64(0),
			"IPEnabled", false, "MACAddress", nil, "IPSubnet", nil))
	default:
		return nil, false
	}
	return out, true
}

func biosVendor(h *host) string {
	if h.m.Virtual {
		return "VMware, Inc."
	}
	return h.m.Vendor
}

func gatewayOf(w *windowsSpec) string {
	a := w.addr.Masked().Addr().As4()
	a[3]++
	return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3])
}

func maskOf(bits int) string {
	m := uint32(math.MaxUint32) << (32 - bits)
	return fmt.Sprintf("%d.%d.%d.%d", byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

func uninstallEntries(h *host, wow bool) []*psObject {
	var out []*psObject
	for i, s := range h.win.software {
		if (i%3 == 2) != wow { // some packages are 32-bit: under WOW6432Node
			continue
		}
		var date any = s.installDate
		if s.installDate == "" {
			date = nil
		}
		out = append(out, obj("Uninstall", "DisplayName", s.name, "DisplayVersion", s.version, "Publisher", s.publisher,
			"InstallDate", date, "PSChildName", fmt.Sprintf("{%08X-%04X-4%03X-A%03X-%012X}", 0x1A2B0000+i, i*7, i, i*3, 0xBEEF00+i)))
	}
	if !wow {
		// a key without DisplayName, as every real Uninstall tree has (hidden components)
		out = append(out, obj("Uninstall", "PSChildName", "AddressBook"))
	}
	return out
}

type psRun struct {
	ctx    context.Context
	h      *host
	out    io.Writer
	errs   strings.Builder
	vars   map[string]any
	failed bool
	exit   *int
}

type psError struct{ msg, category, id string }

func (e *psError) Error() string { return e.msg }

func notFound(name string) *psError {
	return &psError{msg: name + " : The term '" + name + "' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again.",
		category: "ObjectNotFound: (" + name + ":String) [], CommandNotFoundException", id: "CommandNotFoundException"}
}

// runPowerShell runs a script, writing its output; it returns the exit code and the error
// stream's text.
func runPowerShell(ctx context.Context, h *host, script string, out io.Writer) (int, string) {
	script = strings.TrimPrefix(script, "$ProgressPreference = 'SilentlyContinue';")
	r := &psRun{ctx: ctx, h: h, out: out, vars: map[string]any{}}
	for _, st := range splitTop(script, ";\n") {
		st = strings.TrimSpace(strings.TrimSuffix(st, "\r"))
		if st == "" || strings.HasPrefix(st, "#") {
			continue
		}
		if err := r.statement(st); err != nil {
			if pe, ok := err.(*psError); ok {
				r.failed = true
				fmt.Fprintf(&r.errs, "%s\r\n    + CategoryInfo          : %s\r\n    + FullyQualifiedErrorId : %s\r\n", pe.msg, pe.category, pe.id)
				if s, _ := r.vars["erroractionpreference"].(string); strings.EqualFold(s, "Stop") {
					return 1, r.errs.String()
				}
				continue
			}
			return 1, r.errs.String() // cancelled
		}
		if r.exit != nil {
			return *r.exit, r.errs.String()
		}
	}
	if r.failed {
		return 1, r.errs.String()
	}
	return 0, r.errs.String()
}

var assignRE = regexp.MustCompile(`^\$(\w+)\s*=\s*([\s\S]+)$`)

func (r *psRun) statement(st string) error {
	if m := assignRE.FindStringSubmatch(st); m != nil && !strings.HasPrefix(strings.TrimSpace(m[2]), "=") {
		v, err := r.pipeline(m[2])
		if err != nil {
			return err
		}
		r.vars[strings.ToLower(m[1])] = collapse(v)
		return nil
	}
	if f := strings.Fields(st); strings.EqualFold(f[0], "exit") {
		code := 0
		if len(f) > 1 {
			code, _ = strconv.Atoi(f[1])
		}
		r.exit = &code
		return nil
	}
	vals, err := r.pipeline(st)
	if err != nil {
		return err
	}
	io.WriteString(r.out, formatDefault(vals))
	return nil
}

// collapse is a pipeline's value as a variable or hashtable entry holds it.
func collapse(v []any) any {
	switch len(v) {
	case 0:
		return nil
	case 1:
		return v[0]
	}
	return []any(v)
}

func (r *psRun) pipeline(s string) ([]any, error) {
	elems := splitTop(s, "|")
	vals, err := r.source(strings.TrimSpace(elems[0]))
	if err != nil {
		return nil, err
	}
	if len(elems) > 1 {
		vals = unroll(vals)
	}
	for _, e := range elems[1:] {
		if vals, err = r.filter(vals, strings.TrimSpace(e)); err != nil {
			return nil, err
		}
	}
	return vals, nil
}

func unroll(vals []any) []any {
	var out []any
	for _, v := range vals {
		switch x := v.(type) {
		case psArray:
			out = append(out, x...)
		case []any:
			out = append(out, x...)
		default:
			out = append(out, v)
		}
	}
	return out
}

var rangeRE = regexp.MustCompile(`^(-?\d+)\.\.(-?\d+)$`)

func (r *psRun) source(e string) ([]any, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	lower := strings.ToLower(e)
	switch {
	case strings.HasPrefix(lower, "[ordered]@{") || strings.HasPrefix(e, "@{") || strings.HasPrefix(lower, "[pscustomobject]@{"):
		inner := e[strings.Index(e, "{")+1 : strings.LastIndex(e, "}")]
		o := &psObject{class: "Hashtable"}
		for _, kv := range splitTop(inner, ";\n") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			vals, err := r.pipeline(strings.TrimSpace(v))
			if err != nil {
				return nil, err
			}
			o.props = append(o.props, psProp{strings.Trim(strings.TrimSpace(k), `'"`), collapse(vals)})
		}
		return []any{o}, nil
	case strings.HasPrefix(e, "@(") && strings.HasSuffix(e, ")"):
		vals, err := r.pipeline(e[2 : len(e)-1])
		if err != nil {
			return nil, err
		}
		return []any{psArray(unroll(vals))}, nil
	case strings.HasPrefix(e, "(") && strings.HasSuffix(e, ")"):
		return r.pipeline(e[1 : len(e)-1])
	case strings.HasPrefix(e, "'") || strings.HasPrefix(e, `"`):
		return []any{r.str(e)}, nil
	case strings.EqualFold(e, "$env:COMPUTERNAME"):
		return []any{r.h.win.netbios}, nil
	case strings.HasPrefix(e, "$"):
		v, ok := r.vars[strings.ToLower(e[1:])]
		if !ok || v == nil {
			return nil, nil
		}
		return []any{v}, nil
	}
	if m := rangeRE.FindStringSubmatch(e); m != nil {
		a, _ := strconv.Atoi(m[1])
		b, _ := strconv.Atoi(m[2])
		if d := b - a; d > 1_000_000 || d < -1_000_000 {
			return nil, &psError{msg: "The range is too large.", category: "InvalidOperation", id: "RangeTooBig"}
		}
		var out []any
		for i := a; ; {
			out = append(out, int64(i))
			if i == b {
				break
			}
			if a < b {
				i++
			} else {
				i--
			}
		}
		return out, nil
	}
	if n, err := strconv.ParseInt(e, 10, 64); err == nil {
		return []any{n}, nil
	}
	return r.command(e)
}

// str is a string literal ('…' verbatim, "…" with $env:COMPUTERNAME expanded).
func (r *psRun) str(e string) string {
	if strings.HasPrefix(e, "'") {
		return strings.ReplaceAll(strings.Trim(e, "'"), "''", "'")
	}
	return strings.ReplaceAll(strings.Trim(e, `"`), "$env:COMPUTERNAME", r.h.win.netbios)
}

// args splits a command's arguments: words, quoted strings and comma lists.
func args(s string) []string {
	var out []string
	for _, w := range splitTop(s, " \t") {
		if w = strings.TrimSpace(w); w != "" {
			out = append(out, w)
		}
	}
	return out
}

func (r *psRun) list(s string) []string {
	var out []string
	for _, p := range splitTop(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, r.str(p))
		}
	}
	return out
}

// named reads -Name value pairs and positional arguments.
func named(a []string) (map[string]string, []string) {
	m := map[string]string{}
	var pos []string
	for i := 0; i < len(a); i++ {
		if strings.HasPrefix(a[i], "-") && len(a[i]) > 1 {
			k := strings.ToLower(strings.TrimPrefix(a[i], "-"))
			if i+1 < len(a) && !strings.HasPrefix(a[i+1], "-") {
				m[k] = a[i+1]
				i++
			} else {
				m[k] = ""
			}
			continue
		}
		pos = append(pos, a[i])
	}
	return m, pos
}

func (r *psRun) command(e string) ([]any, error) {
	a := args(e)
	name := strings.ToLower(a[0])
	opt, pos := named(a[1:])
	switch name {
	case "get-ciminstance", "get-wmiobject", "gcim", "gwmi":
		class := opt["classname"]
		if class == "" {
			class = opt["class"]
		}
		if class == "" && len(pos) > 0 {
			class = pos[0]
		}
		objs, ok := cim(r.h, r.str(class))
		if !ok {
			return nil, &psError{msg: "Get-CimInstance : Invalid class", category: "MetadataError: (root\\cimv2:" + class + ":String) [Get-CimInstance], CimException", id: "HRESULT 0x80041010,Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand"}
		}
		var out []any
		for _, o := range objs {
			if f := opt["filter"]; f == "" || wqlMatch(o, r.str(f)) {
				out = append(out, o)
			}
		}
		return out, nil
	case "get-itemproperty", "gp":
		path := opt["path"]
		if path == "" && len(pos) > 0 {
			path = pos[0]
		}
		var out []any
		for _, p := range r.list(path) {
			lp := strings.ToLower(p)
			if !strings.HasSuffix(lp, `\microsoft\windows\currentversion\uninstall\*`) || !strings.HasPrefix(lp, "hklm:") {
				return nil, &psError{msg: "Get-ItemProperty : Cannot find path '" + p + "' because it does not exist.", category: "ObjectNotFound: (" + p + ":String) [Get-ItemProperty], ItemNotFoundException", id: "PathNotFound,Microsoft.PowerShell.Commands.GetItemPropertyCommand"}
			}
			for _, o := range uninstallEntries(r.h, strings.Contains(lp, `wow6432node`)) {
				out = append(out, o)
			}
		}
		return out, nil
	case "get-service", "gsv":
		var out []any
		for _, s := range r.h.win.services {
			st := psEnum{"Stopped", 1}
			if s.running {
				st = psEnum{"Running", 4}
			}
			out = append(out, obj("ServiceController", "Name", s.name, "DisplayName", s.display, "Status", st,
				"StartType", map[bool]psEnum{true: {"Automatic", 2}, false: {"Manual", 3}}[s.running]))
		}
		return out, nil
	case "get-nettcpconnection":
		var out []any
		if st := opt["state"]; st != "" && !strings.EqualFold(st, "Listen") {
			return nil, nil
		}
		for _, l := range r.h.win.listen {
			out = append(out, obj("MSFT_NetTCPConnection", "LocalAddress", l.addr, "LocalPort", int64(l.port), "RemoteAddress", map[bool]string{true: "::", false: "0.0.0.0"}[strings.Contains(l.addr, ":")],
				"RemotePort", int64(0), "State", psEnum{"Listen", 2}, "AppliedSetting", nil, "OwningProcess", int64(l.pid)))
		}
		return out, nil
	case "hostname", "hostname.exe":
		return []any{r.h.win.netbios}, nil
	case "write-output", "echo":
		var out []any
		for _, p := range pos {
			out = append(out, r.str(p))
		}
		return out, nil
	case "write-host":
		fmt.Fprintf(r.out, "%s\r\n", strings.Join(mapStr(pos, r.str), " "))
		return nil, nil
	case "write-error":
		msg := opt["message"]
		if msg == "" && len(pos) > 0 {
			msg = pos[0]
		}
		return nil, &psError{msg: r.str(msg), category: "NotSpecified: (:) [Write-Error], WriteErrorException", id: "Microsoft.PowerShell.Commands.WriteErrorException"}
	case "start-sleep", "sleep":
		var d time.Duration
		if v, ok := opt["milliseconds"]; ok {
			n, _ := strconv.Atoi(v)
			d = time.Duration(n) * time.Millisecond
		} else {
			v := opt["seconds"]
			if v == "" && len(pos) > 0 {
				v = pos[0]
			}
			f, _ := strconv.ParseFloat(v, 64)
			d = time.Duration(f * float64(time.Second))
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.ctx.Done():
			return nil, r.ctx.Err()
		}
		return nil, nil
	}
	return nil, notFound(a[0])
}

func mapStr(s []string, f func(string) string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

// wqlMatch applies a WQL filter of the form Prop=Value (or Prop='Value', Prop=True).
func wqlMatch(o *psObject, f string) bool {
	for _, cond := range regexp.MustCompile(`(?i)\s+and\s+`).Split(f, -1) {
		k, v, ok := strings.Cut(cond, "=")
		if !ok {
			return false
		}
		got, _ := o.get(strings.TrimSpace(k))
		if !strings.EqualFold(display(got), strings.Trim(strings.TrimSpace(v), `'"`)) {
			return false
		}
	}
	return true
}

var whereRE = regexp.MustCompile(`(?i)^\{?\s*(?:\$_\.)?(\w+)\s*(?:(-eq|-ne|-like|-notlike|-match|-gt|-lt|-ge|-le)\s+(.+?))?\s*\}?$`)

func (r *psRun) filter(vals []any, e string) ([]any, error) {
	a := args(e)
	name := strings.ToLower(a[0])
	rest := strings.TrimSpace(e[len(a[0]):])
	switch name {
	case "select-object", "select":
		opt, pos := named(a[1:])
		if n, ok := opt["first"]; ok {
			k, _ := strconv.Atoi(n)
			return vals[:min(k, len(vals))], nil
		}
		if n, ok := opt["last"]; ok {
			k, _ := strconv.Atoi(n)
			return vals[max(0, len(vals)-k):], nil
		}
		if p, ok := opt["expandproperty"]; ok {
			var out []any
			for _, v := range vals {
				if o, ok := v.(*psObject); ok {
					x, _ := o.get(r.str(p))
					out = append(out, unroll([]any{x})...)
				}
			}
			return out, nil
		}
		spec := opt["property"]
		if spec == "" {
			spec = strings.Join(pos, " ")
		}
		props := r.list(spec)
		var out []any
		for _, v := range vals {
			o, ok := v.(*psObject)
			if !ok {
				out = append(out, v)
				continue
			}
			n := &psObject{class: "Selected." + o.class}
			for _, p := range props {
				if p == "*" {
					n.props = append(n.props, o.props...)
					continue
				}
				// a property the object lacks is still a column, empty (as PowerShell does)
				x, _ := o.get(p)
				name := p
				for _, op := range o.props {
					if strings.EqualFold(op.name, p) {
						name = op.name
					}
				}
				n.props = append(n.props, psProp{name, x})
			}
			out = append(out, n)
		}
		return out, nil
	case "where-object", "where", "?":
		m := whereRE.FindStringSubmatch(rest)
		if m == nil {
			return nil, &psError{msg: "Where-Object : this lab's PowerShell takes Where-Object Prop -op Value or { $_.Prop -op Value }", category: "InvalidArgument", id: "WhereObject"}
		}
		var out []any
		for _, v := range vals {
			o, ok := v.(*psObject)
			if !ok {
				continue
			}
			got, _ := o.get(m[1])
			if compare(got, strings.ToLower(m[2]), r.str(strings.TrimSpace(m[3]))) {
				out = append(out, v)
			}
		}
		return out, nil
	case "sort-object", "sort":
		opt, pos := named(a[1:])
		_, desc := opt["descending"]
		out := slices.Clone(vals)
		if len(pos) > 0 {
			key := r.str(pos[0])
			slices.SortStableFunc(out, func(x, y any) int {
				xv, yv := propOf(x, key), propOf(y, key)
				c := strings.Compare(strings.ToLower(display(xv)), strings.ToLower(display(yv)))
				if xn, ok := xv.(int64); ok {
					if yn, ok := yv.(int64); ok {
						c = int(xn - yn)
					}
				}
				if desc {
					return -c
				}
				return c
			})
		}
		return out, nil
	case "format-list", "fl":
		_, pos := named(a[1:])
		return []any{psText(formatList(vals, r.list(strings.Join(pos, " "))))}, nil
	case "format-table", "ft":
		_, pos := named(a[1:])
		return []any{psText(formatTable(vals, r.list(strings.Join(pos, " "))))}, nil
	case "convertto-json":
		opt, _ := named(a[1:])
		_, compress := opt["compress"]
		return []any{convertToJSON(collapseForJSON(vals), compress)}, nil
	case "out-string":
		return []any{formatDefault(vals)}, nil
	}
	return nil, notFound(a[0])
}

// collapseForJSON: ConvertTo-Json of one piped object is that object; of several, an array.
func collapseForJSON(vals []any) any {
	if len(vals) == 1 {
		if a, ok := vals[0].(psArray); ok {
			return []any(a)
		}
		return vals[0]
	}
	return []any(vals)
}

func propOf(v any, key string) any {
	if o, ok := v.(*psObject); ok {
		x, _ := o.get(key)
		return x
	}
	return nil
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case bool:
		return x
	case int64:
		return x != 0
	case []any:
		return len(x) > 0
	}
	return true
}

func compare(got any, op, want string) bool {
	if op == "" {
		return truthy(got)
	}
	g := display(got)
	gn, gerr := strconv.ParseFloat(g, 64)
	wn, werr := strconv.ParseFloat(want, 64)
	num := gerr == nil && werr == nil
	switch op {
	case "-eq":
		return strings.EqualFold(g, want)
	case "-ne":
		return !strings.EqualFold(g, want)
	case "-like", "-notlike":
		re := "(?i)^" + strings.ReplaceAll(strings.ReplaceAll(regexp.QuoteMeta(want), `\*`, ".*"), `\?`, ".") + "$"
		m, _ := regexp.MatchString(re, g)
		return m == (op == "-like")
	case "-match":
		m, _ := regexp.MatchString("(?i)"+want, g)
		return m
	case "-gt":
		return num && gn > wn
	case "-lt":
		return num && gn < wn
	case "-ge":
		return num && gn >= wn
	case "-le":
		return num && gn <= wn
	}
	return false
}

// display is a value as PowerShell's formatter shows it.
func display(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case psEnum:
		return x.name
	case psDateTime:
		return time.Time(x).UTC().Format("1/2/2006 3:04:05 PM")
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = display(e)
		}
		return "{" + strings.Join(s, ", ") + "}"
	case psArray:
		return display([]any(x))
	case *psObject:
		if x.class == "Hashtable" {
			return "System.Collections.Specialized.OrderedDictionary"
		}
		return x.class
	}
	return fmt.Sprint(v)
}

func viewOf(o *psObject, props []string) []string {
	if len(props) > 0 && !slices.Contains(props, "*") {
		return props
	}
	if len(props) == 0 {
		if v, ok := defaultViews[o.class]; ok {
			return v
		}
	}
	out := make([]string, len(o.props))
	for i, p := range o.props {
		out[i] = p.name
	}
	return out
}

// formatList is Format-List: a blank line, then per object "Name : Value" lines with the
// names padded to the longest, objects separated by a blank line, two blank lines at the end.
func formatList(vals []any, props []string) string {
	var b strings.Builder
	b.WriteString("\r\n")
	for _, v := range unroll(vals) {
		o, ok := v.(*psObject)
		if !ok {
			b.WriteString(display(v) + "\r\n")
			continue
		}
		names := viewOf(o, props)
		w := 0
		for _, n := range names {
			w = max(w, len(n))
		}
		for _, n := range names {
			x, _ := o.get(n)
			fmt.Fprintf(&b, "%-*s : %s\r\n", w, n, display(x))
		}
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// formatTable is Format-Table: headers, dashes, rows; numbers right-aligned.
func formatTable(vals []any, props []string) string {
	var objs []*psObject
	var b strings.Builder
	for _, v := range unroll(vals) {
		if o, ok := v.(*psObject); ok {
			objs = append(objs, o)
		} else {
			b.WriteString(display(v) + "\r\n")
		}
	}
	if len(objs) == 0 {
		return b.String()
	}
	names := viewOf(objs[0], props)
	width := make([]int, len(names))
	right := make([]bool, len(names))
	cells := make([][]string, len(objs))
	for i, n := range names {
		width[i] = len(n)
	}
	for r, o := range objs {
		cells[r] = make([]string, len(names))
		for i, n := range names {
			x, _ := o.get(n)
			_, right[i] = x.(int64)
			cells[r][i] = display(x)
			width[i] = max(width[i], len(cells[r][i]))
		}
	}
	row := func(vals []string) {
		var parts []string
		for i, s := range vals {
			switch {
			case right[i]:
				parts = append(parts, fmt.Sprintf("%*s", width[i], s))
			case i == len(vals)-1:
				parts = append(parts, s)
			default:
				parts = append(parts, fmt.Sprintf("%-*s", width[i], s))
			}
		}
		b.WriteString(strings.TrimRight(strings.Join(parts, " "), " ") + "\r\n")
	}
	b.WriteString("\r\n")
	row(names)
	dashes := make([]string, len(names))
	for i, n := range names {
		dashes[i] = strings.Repeat("-", len(n))
	}
	row(dashes)
	for _, c := range cells {
		row(c)
	}
	b.WriteString("\r\n\r\n")
	return b.String()
}

// formatDefault is what PowerShell prints for values that reach the end of a pipeline:
// text as it is, scalars one per line, objects as a table (up to four properties in the
// view) or a list.
func formatDefault(vals []any) string {
	var b strings.Builder
	var group []any
	flush := func() {
		if len(group) == 0 {
			return
		}
		if len(viewOf(group[0].(*psObject), nil)) <= 4 {
			b.WriteString(formatTable(group, nil))
		} else {
			b.WriteString(formatList(group, nil))
		}
		group = nil
	}
	for _, v := range unroll(vals) {
		switch x := v.(type) {
		case psText:
			flush()
			b.WriteString(string(x))
		case *psObject:
			if len(group) > 0 && group[0].(*psObject).class != x.class {
				flush()
			}
			group = append(group, x)
		default:
			flush()
			b.WriteString(display(x) + "\r\n")
		}
	}
	flush()
	return b.String()
}

// convertToJSON writes Windows PowerShell 5.1's JSON: four-space indents, two spaces after
// a colon, CRLF, "\/Date(ms)\/", enums as numbers, ' < > & escaped as \u00XX.
func convertToJSON(v any, compress bool) psText {
	var b strings.Builder
	nl, ind, colon := "\r\n", "    ", ":  "
	if compress {
		nl, ind, colon = "", "", ":"
	}
	var write func(v any, depth int)
	pad := func(d int) string { return strings.Repeat(ind, d) }
	write = func(v any, d int) {
		switch x := v.(type) {
		case nil:
			b.WriteString("null")
		case string:
			b.WriteString(jsonString(x))
		case bool:
			b.WriteString(map[bool]string{true: "true", false: "false"}[x])
		case int64:
			b.WriteString(strconv.FormatInt(x, 10))
		case float64:
			b.WriteString(strconv.FormatFloat(x, 'f', -1, 64))
		case psEnum:
			b.WriteString(strconv.Itoa(x.val))
		case psDateTime:
			b.WriteString(`"\/Date(` + strconv.FormatInt(time.Time(x).UnixMilli(), 10) + `)\/"`)
		case psArray:
			write([]any(x), d)
		case []any:
			b.WriteString("[" + nl)
			for i, e := range x {
				b.WriteString(pad(d + 1))
				write(e, d+1)
				if i < len(x)-1 {
					b.WriteString(",")
				}
				b.WriteString(nl)
			}
			b.WriteString(pad(d) + "]")
		case *psObject:
			b.WriteString("{" + nl)
			for i, p := range x.props {
				b.WriteString(pad(d+1) + jsonString(p.name) + colon)
				write(p.val, d+1)
				if i < len(x.props)-1 {
					b.WriteString(",")
				}
				b.WriteString(nl)
			}
			b.WriteString(pad(d) + "}")
		default:
			b.WriteString(jsonString(fmt.Sprint(x)))
		}
	}
	write(v, 0)
	b.WriteString("\r\n")
	return psText(b.String())
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c == '\'' || c == '<' || c == '>' || c == '&':
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// splitTop splits s at any of seps outside quotes, (), {} and [].
func splitTop(s, seps string) []string {
	var out []string
	depth, start := 0, 0
	var quote rune
	for i, c := range s {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(' || c == '{' || c == '[':
			depth++
		case c == ')' || c == '}' || c == ']':
			depth--
		case depth == 0 && strings.ContainsRune(seps, c):
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// runCmd runs a cmd.exe command line.
func runCmd(ctx context.Context, h *host, line string, out io.Writer) (int, string) {
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(strings.ToLower(line), "cmd /c "); ok {
		line = line[len(line)-len(rest):]
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return 0, ""
	}
	w := h.win
	switch strings.ToLower(f[0]) {
	case "hostname":
		fmt.Fprintf(out, "%s\r\n", w.netbios)
	case "ver":
		fmt.Fprintf(out, "\r\nMicrosoft Windows [Version %s.%d]\r\n", w.version, 2849)
	case "whoami":
		fmt.Fprintf(out, "%s\\%s\r\n", strings.ToLower(w.netbios), strings.ToLower(w.user))
	case "echo":
		fmt.Fprintf(out, "%s\r\n", strings.TrimSpace(line[4:]))
	case "exit":
		code := 0
		for _, a := range f[1:] {
			if n, err := strconv.Atoi(a); err == nil {
				code = n
			}
		}
		return code, ""
	case "timeout":
		n := 0
		for i, a := range f {
			if strings.EqualFold(a, "/t") && i+1 < len(f) {
				n, _ = strconv.Atoi(f[i+1])
			}
		}
		t := time.NewTimer(time.Duration(n) * time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 1, ""
		}
		fmt.Fprintf(out, "\r\nWaiting for 0 seconds, press CTRL+C to quit ...\r\n")
	default:
		return 1, fmt.Sprintf("'%s' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n", f[0])
	}
	return 0, ""
}
