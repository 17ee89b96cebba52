package tokens

// Sign returns a record as the store writes it under kvKey (tests: a signed record with a
// field the store never writes must still be refused).
func (s *Store) Sign(kvKey string, t Token) []byte { return s.encode(kvKey, t) }
