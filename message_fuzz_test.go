package reliable_test

import (
	"errors"
	"testing"

	"github.com/reliable-go/reliable"
)

// FuzzMessageValidate feeds Validate the fields other clients put on the
// wire: binary keys and IDs (a Java LongSerializer key has NUL bytes),
// invalid UTF-8, empty and oversized header names. Validate must never
// panic, must refuse only with an *InvalidMessageError that matches
// ErrInvalidMessage and is permanent, and must refuse exactly the messages
// with no topic or an empty header name. The seed corpus is in
// testdata/fuzz/FuzzMessageValidate.
func FuzzMessageValidate(f *testing.F) {
	f.Add("orders", "order-1", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "order.paid", "traceparent", "00-abc-01")
	f.Add("orders", "\x00\x00\x00\x00\x00\x00\x00\x2a", "", "", "", "")
	f.Add("", "\xff\xfe", "\x00id", "type", "ce_id", "\x00")
	f.Fuzz(func(t *testing.T, topic, key, id, typ, header, value string) {
		m := &reliable.Message{Topic: topic, Key: key, ID: id, Type: typ, Payload: []byte(value)}
		if header != "" || value != "" {
			m.Headers = map[string]string{header: value}
		}
		err := m.Validate()
		wantRefused := topic == "" || (m.Headers != nil && header == "")
		if (err != nil) != wantRefused {
			t.Fatalf("Validate(topic %q, header name %q) = %v, want refused %v", topic, header, err, wantRefused)
		}
		if err == nil {
			return
		}
		var ie *reliable.InvalidMessageError
		if !errors.As(err, &ie) || !errors.Is(err, reliable.ErrInvalidMessage) || !reliable.IsPermanent(err) || len(ie.Problems) == 0 {
			t.Fatalf("Validate error %T %v is not a permanent *InvalidMessageError with problems", err, err)
		}
	})
}
