package envelope

// ReadMeta reads and checks a message's CloudEvents headers through get (first value or ""),
// as Decode does before it decodes the body: for a consumer with a decoder of its own for
// one body type (the CMDB's payload decoder), whose errors fall back to Decode's.
func ReadMeta(get func(string) string) (Meta, error) { return readMeta(get) }

// Encoded is a body that carries its JSON already made by its producer (the importer's
// payloads, encoded by hand byte for byte as json.Marshal would): Encode sends those bytes
// as they are. As a json.Marshaler they would be scanned and copied again, which cost as
// much as making them.
type Encoded interface {
	Body
	EncodedJSON() []byte
}
