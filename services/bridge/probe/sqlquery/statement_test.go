package sqlquery

import (
	"strings"
	"testing"
)

func TestCheckReadOnly(t *testing.T) {
	ok := []struct{ driver, sql string }{
		{"postgres", "SELECT * FROM inventory WHERE name = 'DROP TABLE x; --'"},
		{"postgres", "select 1;"},
		{"postgres", "WITH t AS (SELECT 1 AS n) SELECT n FROM t"},
		{"postgres", "SELECT $$ DELETE FROM t; $$ AS s, $tag$ ; INSERT $tag$"},
		{"postgres", "/* UPDATE /* nested */ still comment */ SELECT 1"},
		{"postgres", `SELECT "update", "delete" FROM "insert"`},
		{"postgres", "SELECT $1::int"},
		{"postgres", "SELECT E'it\\'s' AS s, 'plain\\' AS t"},
		{"mysql", "SELECT 'it\\'s; DROP' FROM dual # DELETE"},
		{"mysql", "SHOW TABLES"},
		{"mysql", "SELECT REPLACE(name, 'a', 'b') FROM t"},
		{"sqlserver", "SELECT [delete], [drop] FROM [dbo].[update]"},
		{"sqlserver", "SELECT TOP 10 * FROM v_R_System -- CM inventory"},
		{"postgres", "EXPLAIN SELECT 1"},
	}
	for _, c := range ok {
		if err := CheckReadOnly(c.sql, c.driver); err != nil {
			t.Errorf("%s %q refused: %v", c.driver, c.sql, err)
		}
	}
	bad := []struct{ driver, sql, why string }{
		{"postgres", "DELETE FROM t", "starts with"},
		{"postgres", "SELECT 1; DELETE FROM t", "2 statements"},
		{"postgres", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"},
		{"postgres", "SELECT * INTO new_table FROM t", "INTO"},
		{"postgres", "SELECT * FROM t FOR UPDATE", "UPDATE"},
		{"postgres", "EXPLAIN ANALYZE DELETE FROM t", "ANALYZE"},
		{"postgres", "SELECT 'unterminated", "unterminated"},
		{"postgres", "SELECT 1 /* open", "unterminated"},
		{"postgres", "SELECT $x$ open", "unterminated"},
		{"mysql", "SELECT 1 /*! ; DROP TABLE t */", "executable comment"},
		{"mysql", "SELECT * FROM t INTO OUTFILE '/tmp/x'", "INTO"},
		{"sqlserver", "SELECT 1; EXEC xp_cmdshell 'dir'", "2 statements"},
		{"sqlserver", "SELECT * FROM OPENROWSET('SQLNCLI', 'x', 'y')", "OPENROWSET"},
		{"sqlserver", "SELECT xp_cmdshell('dir')", "XP_CMDSHELL"},
		{"postgres", "SELECT E'\\'', 1; DELETE FROM t; --'", "2 statements"},
		{"postgres", "", "no statement"},
		{"postgres", " ; ; ", "no statement"},
	}
	for _, c := range bad {
		err := CheckReadOnly(c.sql, c.driver)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s %q: error %v, want one about %q", c.driver, c.sql, err, c.why)
		}
	}
}

// FuzzCheckReadOnly: the checker never panics, and what it accepts is one statement that
// starts like a query and holds no word that writes.
func FuzzCheckReadOnly(f *testing.F) {
	f.Add("SELECT 1", "postgres")
	f.Fuzz(func(t *testing.T, sql, driver string) {
		if CheckReadOnly(sql, driver) != nil {
			return
		}
		stmts, err := Split(sql, driver)
		if err != nil || len(stmts) != 1 || !readStarts[stmts[0].Words[0]] {
			t.Fatalf("accepted %q (%s): %v %+v", sql, driver, err, stmts)
		}
		for _, w := range stmts[0].Words {
			if writeWords[w] {
				t.Fatalf("accepted %q holding %s", sql, w)
			}
		}
	})
}
