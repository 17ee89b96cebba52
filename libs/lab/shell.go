package lab

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A tiny shell: enough of sh for what discovery and orchestration send over
// SSH exec — quoting, `;` `&&` `||`, pipes into head/tail/grep/wc/sort,
// redirects to /dev/null, VAR=value prefixes, sudo, sh -c. Unknown commands
// fail like bash does: "bash: X: command not found", exit 127.

type shellEnv struct {
	ctx    context.Context
	h      *host
	user   string
	stdout io.Writer
	stderr io.Writer
}

// maxPipeBuffer bounds what one pipeline stage may produce before the next
// stage sees it (`yes | head` still works: producers stop at the limit).
const maxPipeBuffer = 16 << 20

type token struct {
	s  string
	op bool // an operator: ; && || |
}

func tokenize(line string) ([]token, error) {
	var toks []token
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			toks = append(toks, token{s: cur.String()})
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unexpected EOF while looking for matching `''")
			}
			cur.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errors.New("unexpected EOF while looking for matching `\"'")
			}
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			flush()
		case c == ';':
			flush()
			toks = append(toks, token{s: ";", op: true})
		case c == '&' && i+1 < len(line) && line[i+1] == '&':
			flush()
			toks = append(toks, token{s: "&&", op: true})
			i++
		case c == '|' && i+1 < len(line) && line[i+1] == '|':
			flush()
			toks = append(toks, token{s: "||", op: true})
			i++
		case c == '|':
			flush()
			toks = append(toks, token{s: "|", op: true})
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return toks, nil
}

// run executes a command line and returns its exit status.
func (e *shellEnv) run(line string) int {
	toks, err := tokenize(line)
	if err != nil {
		fmt.Fprintf(e.stderr, "bash: -c: line 1: %v\n", err)
		return 2
	}
	status := 0
	op := ";"
	var pipeline [][]string
	var stage []string
	exec := func() {
		if stage != nil {
			pipeline = append(pipeline, stage)
		}
		if len(pipeline) == 0 {
			return
		}
		if (op == "&&" && status != 0) || (op == "||" && status == 0) {
			pipeline, stage = nil, nil
			return
		}
		status = e.pipeline(pipeline)
		pipeline, stage = nil, nil
	}
	for _, t := range toks {
		if !t.op {
			stage = append(stage, t.s)
			continue
		}
		if t.s == "|" {
			if stage == nil {
				fmt.Fprintln(e.stderr, "bash: syntax error near unexpected token `|'")
				return 2
			}
			pipeline = append(pipeline, stage)
			stage = nil
			continue
		}
		exec()
		op = t.s
		if e.ctx.Err() != nil {
			return 130
		}
	}
	exec()
	return status
}

func (e *shellEnv) pipeline(stages [][]string) int {
	if len(stages) == 1 {
		return e.command(stages[0], nil, e.stdout, e.stderr)
	}
	var in []byte
	status := 0
	for i, st := range stages {
		var out io.Writer
		var buf *limitedBuffer
		if i == len(stages)-1 {
			out = e.stdout
		} else {
			buf = &limitedBuffer{max: maxPipeBuffer}
			out = buf
		}
		status = e.command(st, in, out, e.stderr)
		if buf != nil {
			in = buf.Bytes()
		}
	}
	return status
}

// limitedBuffer stops accepting writes at max bytes, like a pipe whose reader
// went away: the writer gets an error and stops.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

var errPipeFull = errors.New("broken pipe")

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		n, _ := b.Buffer.Write(p[:b.max-b.Len()])
		return n, errPipeFull
	}
	return b.Buffer.Write(p)
}

// command runs one simple command. in is the previous pipeline stage's
// output (nil for the first stage).
func (e *shellEnv) command(argv []string, in []byte, stdout, stderr io.Writer) int {
	// redirects
	var args []string
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		switch a {
		case "2>/dev/null":
			stderr = io.Discard
			continue
		case ">/dev/null", "1>/dev/null":
			stdout = io.Discard
			continue
		case "2>&1":
			stderr = stdout
			continue
		case "</dev/null":
			continue
		case "2>", ">", "1>", "<":
			if i+1 < len(argv) && argv[i+1] == "/dev/null" {
				switch a {
				case "2>":
					stderr = io.Discard
				case ">", "1>":
					stdout = io.Discard
				}
				i++
				continue
			}
			fmt.Fprintln(stderr, "bash: redirection to files is not permitted")
			return 1
		}
		args = append(args, a)
	}
	// VAR=value prefixes
	for len(args) > 0 && strings.Contains(args[0], "=") && !strings.HasPrefix(args[0], "-") && !strings.HasPrefix(args[0], "=") {
		args = args[1:]
	}
	if len(args) == 0 {
		return 0
	}
	// sudo [-n] [-S] [-E] [-u root] cmd: the lab's service accounts have NOPASSWD sudo
	if args[0] == "sudo" {
		args = args[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "-") {
			if args[0] == "-u" && len(args) > 1 {
				args = args[1:]
			}
			args = args[1:]
		}
		if len(args) == 0 {
			fmt.Fprintln(stderr, "usage: sudo -h | -K | -k | -V")
			return 1
		}
		sub := *e
		sub.user = "root"
		return sub.command(args, in, stdout, stderr)
	}
	name := args[0]
	if (name == "sh" || name == "bash") && len(args) >= 3 && args[1] == "-c" {
		sub := *e
		sub.stdout, sub.stderr = stdout, stderr
		return sub.run(args[2])
	}
	w := &cmdWriter{stdout: stdout, stderr: stderr}
	lx := e.h.lx
	switch name {
	case "true", ":":
		return 0
	case "false":
		return 1
	case "exit":
		if len(args) > 1 {
			n, _ := strconv.Atoi(args[1])
			return n & 0xff
		}
		return 0
	case "echo":
		rest := args[1:]
		nl := "\n"
		if len(rest) > 0 && rest[0] == "-n" {
			rest, nl = rest[1:], ""
		}
		w.out(strings.Join(rest, " ") + nl)
		return 0
	case "sleep":
		if len(args) < 2 {
			w.err("sleep: missing operand\n")
			return 1
		}
		d, err := strconv.ParseFloat(strings.TrimSuffix(args[1], "s"), 64)
		if err != nil || d < 0 {
			w.err(fmt.Sprintf("sleep: invalid time interval '%s'\n", args[1]))
			return 1
		}
		t := time.NewTimer(time.Duration(d * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
			return 0
		case <-e.ctx.Done():
			return 130
		}
	case "seq":
		return e.seq(args[1:], w)
	case "yes":
		s := "y"
		if len(args) > 1 {
			s = strings.Join(args[1:], " ")
		}
		chunk := []byte(strings.Repeat(s+"\n", max(1, 8192/(len(s)+1))))
		for e.ctx.Err() == nil {
			if _, err := stdout.Write(chunk); err != nil {
				return 141
			}
		}
		return 130
	case "head", "tail", "grep", "wc", "sort", "uniq":
		return textFilter(args, in, w)
	case "whoami":
		w.out(e.user + "\n")
		return 0
	case "id":
		if e.user == "root" {
			w.out("uid=0(root) gid=0(root) groups=0(root)\n")
		} else {
			sudo := "27(sudo)"
			if lx.d.family == "rpm" {
				sudo = "10(wheel)"
			}
			w.out(fmt.Sprintf("uid=1001(%s) gid=1001(%s) groups=1001(%s),%s\n", e.user, e.user, e.user, sudo))
		}
		return 0
	case "which", "command":
		rest := args[1:]
		if name == "command" {
			if len(rest) == 0 || rest[0] != "-v" {
				return 0
			}
			rest = rest[1:]
		}
		status := 0
		for _, c := range rest {
			if p, ok := lx.commandPath(c); ok {
				w.out(p + "\n")
			} else {
				status = 1
			}
		}
		return status
	case "nproc":
		w.out(fmt.Sprintf("%d\n", lx.cpus))
		return 0
	case "arch":
		w.out("x86_64\n")
		return 0
	case "date":
		w.out(time.Now().UTC().Format("Mon Jan _2 15:04:05 UTC 2006") + "\n")
		return 0
	case "uptime":
		w.out(time.Now().UTC().Format(" 15:04:05") + " up 42 days,  3:05,  1 user,  load average: 0.08, 0.03, 0.01\n")
		return 0
	}
	if _, ok := lx.commandPath(name); !ok {
		fmt.Fprintf(stderr, "bash: %s: command not found\n", name)
		return 127
	}
	return e.h.linuxCommand(e, args, w)
}

// cmdWriter collects a command's output; write errors (client gone, pipe
// full) are remembered so streaming commands stop.
type cmdWriter struct {
	stdout, stderr io.Writer
	failed         bool
}

func (w *cmdWriter) out(s string) {
	if _, err := io.WriteString(w.stdout, s); err != nil {
		w.failed = true
	}
}

func (w *cmdWriter) err(s string) { io.WriteString(w.stderr, s) }

func (e *shellEnv) seq(args []string, w *cmdWriter) int {
	nums := make([]int64, 0, 3)
	for _, a := range args {
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			w.err(fmt.Sprintf("seq: invalid floating point argument: '%s'\n", a))
			return 1
		}
		nums = append(nums, n)
	}
	first, step, last := int64(1), int64(1), int64(0)
	switch len(nums) {
	case 1:
		last = nums[0]
	case 2:
		first, last = nums[0], nums[1]
	case 3:
		first, step, last = nums[0], nums[1], nums[2]
	default:
		w.err("seq: missing operand\n")
		return 1
	}
	if step == 0 {
		w.err("seq: invalid Zero increment value: '0'\n")
		return 1
	}
	var buf []byte
	for i := first; (step > 0 && i <= last) || (step < 0 && i >= last); i += step {
		buf = strconv.AppendInt(buf, i, 10)
		buf = append(buf, '\n')
		if len(buf) >= 32<<10 {
			if _, err := w.stdout.Write(buf); err != nil || e.ctx.Err() != nil {
				return 141
			}
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		if _, err := w.stdout.Write(buf); err != nil {
			return 141
		}
	}
	return 0
}

// textFilter implements the common pipe tails: head/tail [-n N] [-c N], grep
// [-i] [-v] [-c] [-E] [-F] PATTERN or -e PATTERN... (fixed strings), wc [-l|-c|-w], sort [-r] [-n], uniq.
func textFilter(args []string, in []byte, w *cmdWriter) int {
	name := args[0]
	text := string(in)
	lines := strings.SplitAfter(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	flags := map[string]string{}
	var operands, patterns []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "-e" || a == "--regexp") && name == "grep" && i+1 < len(args):
			patterns = append(patterns, args[i+1]) // grep -e P1 -e P2: a line with any of them
			i++
		case (a == "-n" || a == "-c") && (name == "head" || name == "tail") && i+1 < len(args):
			flags[a] = args[i+1]
			i++
		case strings.HasPrefix(a, "-n") && len(a) > 2 && (name == "head" || name == "tail"):
			flags["-n"] = a[2:]
		case strings.HasPrefix(a, "-") && len(a) > 1 && (name == "head" || name == "tail") && a[1] >= '0' && a[1] <= '9':
			flags["-n"] = a[1:]
		case strings.HasPrefix(a, "-") && len(a) > 1 && !(name == "grep" && len(operands) > 0):
			for _, c := range a[1:] {
				flags["-"+string(c)] = "1"
			}
		default:
			operands = append(operands, a)
		}
	}
	switch name {
	case "head", "tail":
		if c, ok := flags["-c"]; ok {
			n, _ := strconv.Atoi(c)
			n = min(n, len(text))
			if name == "head" {
				w.out(text[:n])
			} else {
				w.out(text[len(text)-n:])
			}
			return 0
		}
		n := 10
		if v, ok := flags["-n"]; ok {
			n, _ = strconv.Atoi(strings.TrimPrefix(v, "+"))
		}
		n = min(n, len(lines))
		if name == "head" {
			w.out(strings.Join(lines[:n], ""))
		} else {
			w.out(strings.Join(lines[len(lines)-n:], ""))
		}
		return 0
	case "grep":
		if len(patterns) == 0 && len(operands) == 0 {
			w.err("Usage: grep [OPTION]... PATTERNS [FILE]...\n")
			return 2
		}
		if len(patterns) == 0 {
			patterns = operands[:1]
		}
		ci := flags["-i"] != ""
		if ci {
			for i := range patterns {
				patterns[i] = strings.ToLower(patterns[i])
			}
		}
		count := 0
		var out strings.Builder
		for _, l := range lines {
			hay := l
			if ci {
				hay = strings.ToLower(l)
			}
			hit := slices.ContainsFunc(patterns, func(p string) bool { return strings.Contains(hay, p) })
			if hit != (flags["-v"] != "") {
				count++
				out.WriteString(l)
			}
		}
		if flags["-c"] != "" {
			w.out(fmt.Sprintf("%d\n", count))
		} else {
			w.out(out.String())
		}
		if count == 0 {
			return 1
		}
		return 0
	case "wc":
		switch {
		case flags["-l"] != "":
			w.out(fmt.Sprintf("%d\n", strings.Count(text, "\n")))
		case flags["-c"] != "":
			w.out(fmt.Sprintf("%d\n", len(text)))
		case flags["-w"] != "":
			w.out(fmt.Sprintf("%d\n", len(strings.Fields(text))))
		default:
			w.out(fmt.Sprintf("%7d %7d %7d\n", strings.Count(text, "\n"), len(strings.Fields(text)), len(text)))
		}
		return 0
	case "sort":
		sorted := append([]string(nil), lines...)
		if flags["-n"] != "" {
			num := func(s string) float64 { f, _ := strconv.ParseFloat(strings.Fields(s + " 0")[0], 64); return f }
			slices.SortStableFunc(sorted, func(a, b string) int { return cmp.Compare(num(a), num(b)) })
		} else {
			slices.Sort(sorted)
		}
		if flags["-r"] != "" {
			for i, j := 0, len(sorted)-1; i < j; i, j = i+1, j-1 {
				sorted[i], sorted[j] = sorted[j], sorted[i]
			}
		}
		w.out(strings.Join(sorted, ""))
		return 0
	case "uniq":
		var out []string
		for _, l := range lines {
			if len(out) == 0 || out[len(out)-1] != l {
				out = append(out, l)
			}
		}
		w.out(strings.Join(out, ""))
		return 0
	}
	return 0
}
