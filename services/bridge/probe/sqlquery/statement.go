package sqlquery

import (
	"fmt"
	"strings"
	"unicode"
)

// Statement is one SQL statement as the checker sees it: its words outside strings,
// quoted identifiers and comments.
type Statement struct {
	Text  string
	Words []string // upper case
}

// Split cuts SQL text into statements at top-level semicolons. It understands single-
// quoted strings (with ” and, for mysql, backslash escapes), double-quoted and
// backquoted identifiers, [bracketed] identifiers (sqlserver), $tag$ dollar quotes
// (postgres), -- and # (mysql) line comments and /* */ comments (nested for postgres).
// Unterminated quotes or comments are errors: a checker that guesses is a checker that
// can be fooled.
func Split(sql, driver string) ([]Statement, error) {
	var out []Statement
	var words []string
	start := 0
	word := strings.Builder{}
	endWord := func() {
		if word.Len() > 0 {
			words = append(words, strings.ToUpper(word.String()))
			word.Reset()
		}
	}
	end := func(i int) {
		endWord()
		if text := strings.TrimSpace(sql[start:i]); text != "" || len(words) > 0 {
			if len(words) > 0 {
				out = append(out, Statement{Text: text, Words: words})
			}
		}
		words = nil
		start = i + 1
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == ';':
			end(i)
		case c == '\'' || c == '"' || c == '`' || (c == '[' && driver == "sqlserver"):
			// PostgreSQL's E'...' strings take backslash escapes, like all of MySQL's
			escapes := driver == "mysql" && c != '`'
			if driver == "postgres" && c == '\'' && word.Len() == 1 && (word.String() == "E" || word.String() == "e") {
				escapes = true
			}
			endWord()
			closer := c
			if c == '[' {
				closer = ']'
			}
			j := i + 1
			for ; j < len(sql); j++ {
				if escapes && sql[j] == '\\' {
					j++
					continue
				}
				if sql[j] == closer {
					if j+1 < len(sql) && sql[j+1] == closer { // doubled quote
						j++
						continue
					}
					break
				}
			}
			if j >= len(sql) {
				return nil, fmt.Errorf("unterminated %c at offset %d", c, i)
			}
			if c == '"' || c == '`' || c == '[' {
				// a quoted identifier is a word the checker must see: "DELETE" is not a keyword,
				// but an identifier is still a token
				words = append(words, "\x00IDENT")
			} else {
				words = append(words, "\x00STRING")
			}
			i = j
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-', c == '#' && driver == "mysql":
			endWord()
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				i = len(sql)
			} else {
				i += j
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			endWord()
			if driver == "mysql" && i+2 < len(sql) && sql[i+2] == '!' {
				// MySQL executes /*! ... */ "comments": refuse them rather than parse them
				return nil, fmt.Errorf("MySQL executable comment /*! at offset %d", i)
			}
			depth, j := 1, i+2
			for ; j < len(sql) && depth > 0; j++ {
				switch {
				case sql[j] == '*' && j+1 < len(sql) && sql[j+1] == '/':
					depth--
					j++
				case driver == "postgres" && sql[j] == '/' && j+1 < len(sql) && sql[j+1] == '*':
					depth++
					j++
				}
			}
			if depth > 0 {
				return nil, fmt.Errorf("unterminated comment at offset %d", i)
			}
			i = j - 1
		case c == '$' && driver == "postgres" && word.Len() == 0:
			// $tag$ ... $tag$ (or $1, a parameter)
			j := i + 1
			for j < len(sql) && isTagByte(sql[j], j == i+1) {
				j++
			}
			if j < len(sql) && sql[j] == '$' {
				tag := sql[i : j+1]
				k := strings.Index(sql[j+1:], tag)
				if k < 0 {
					return nil, fmt.Errorf("unterminated dollar quote %s at offset %d", tag, i)
				}
				words = append(words, "\x00STRING")
				i = j + 1 + k + len(tag) - 1
				continue
			}
			word.WriteByte(c)
		case isWordByte(c):
			word.WriteByte(c)
		case c >= 0x80:
			// identifiers may be non-ASCII: keep them as words
			word.WriteByte(c)
		default:
			endWord()
		}
	}
	end(len(sql))
	return out, nil
}

// isTagByte: a dollar-quote tag is letters, digits (not first) and underscores.
func isTagByte(c byte, first bool) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || c >= 0x80 || (!first && '0' <= c && c <= '9')
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c == '@' || unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c))
}

// readStarts are the first words of statements that only read.
var readStarts = map[string]bool{"SELECT": true, "WITH": true, "SHOW": true, "EXPLAIN": true, "VALUES": true,
	"TABLE": true, "DESCRIBE": true, "DESC": true}

// writeWords are words a read-only statement may not contain anywhere (outside strings
// and comments): they write, change the schema or the session, run code, or lock.
var writeWords = wordSet(`INSERT UPDATE DELETE MERGE UPSERT INTO CREATE ALTER DROP TRUNCATE GRANT REVOKE DENY
		EXEC EXECUTE CALL COPY LOAD HANDLER LOCK UNLOCK SET USE BEGIN COMMIT ROLLBACK SAVEPOINT PREPARE DEALLOCATE
		DECLARE VACUUM ANALYZE CLUSTER REINDEX REFRESH NOTIFY BACKUP RESTORE DBCC SHUTDOWN KILL OPENROWSET
		OPENQUERY OPENDATASOURCE BULK OUTFILE DUMPFILE`)

func wordSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

// CheckReadOnly accepts exactly one statement that reads: it starts like a query and
// contains no word that writes. The read-only transaction it then runs in is the second
// line of defence; the database user's privileges are the third.
func CheckReadOnly(sql, driver string) error {
	stmts, err := Split(sql, driver)
	if err != nil {
		return err
	}
	switch len(stmts) {
	case 0:
		return fmt.Errorf("no statement")
	case 1:
	default:
		return fmt.Errorf("%d statements: a read-only query is one statement", len(stmts))
	}
	w := stmts[0].Words
	if !readStarts[w[0]] {
		return fmt.Errorf("a read-only query starts with SELECT, WITH, SHOW, EXPLAIN, VALUES, TABLE or DESCRIBE, not %s", show(w[0]))
	}
	for _, x := range w {
		if writeWords[x] {
			return fmt.Errorf("%s is not allowed in a read-only query (mark the probe write where the bridge allows writes)", x)
		}
		if strings.HasPrefix(x, "XP_") || strings.HasPrefix(x, "SP_") {
			return fmt.Errorf("%s: stored procedures are not allowed in a read-only query", x)
		}
	}
	if w[0] == "EXPLAIN" {
		for _, x := range w {
			if x == "ANALYZE" { // EXPLAIN ANALYZE runs the statement
				return fmt.Errorf("EXPLAIN ANALYZE runs the statement: not allowed in a read-only query")
			}
		}
	}
	return nil
}

func show(w string) string {
	if strings.HasPrefix(w, "\x00") {
		return strings.ToLower(w[1:])
	}
	return w
}
