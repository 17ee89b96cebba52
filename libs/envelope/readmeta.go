package envelope

// ReadMeta reads and checks a message's CloudEvents headers through get (first value or ""),
// as Decode does before it decodes the body: for a consumer with a decoder of its own for
// one body type (the CMDB's payload decoder), whose errors fall back to Decode's.
func ReadMeta(get func(string) string) (Meta, error) { return readMeta(get) }
