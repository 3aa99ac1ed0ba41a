package rabbitmq

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// fuzzTable decodes b into an AMQP header table holding every value type
// amqp091-go decodes from the wire (and Go ints, which a library publisher
// may pass), so the fuzzer explores foreign producers' headers: missing,
// binary, odd types, nested tables and arrays, oversized, invalid UTF-8.
// Entries are: type byte, key length byte, key, value. A repeated key keeps
// its last value, as amqp091-go does. Decoding stops at the first
// malformed entry.
func fuzzTable(b []byte, depth int) amqp.Table {
	t := amqp.Table{}
	for len(b) >= 2 {
		typ, klen := b[0], int(b[1])
		b = b[2:]
		if len(b) < klen {
			break
		}
		key := string(b[:klen])
		b = b[klen:]
		v, rest, ok := fuzzValue(typ, b, depth)
		if !ok {
			break
		}
		t[key] = v
		b = rest
	}
	return t
}

// fuzzValue decodes one value of type typ from b.
func fuzzValue(typ byte, b []byte, depth int) (v any, rest []byte, ok bool) {
	fixed := func(n int) ([]byte, bool) {
		if len(b) < n {
			return nil, false
		}
		return b[:n], true
	}
	sized := func() ([]byte, []byte, bool) {
		if len(b) < 2 {
			return nil, nil, false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, nil, false
		}
		return b[2 : 2+n], b[2+n:], true
	}
	switch typ {
	case 'S', 'x', 'F', 'A':
		body, rest, ok := sized()
		if !ok {
			return nil, nil, false
		}
		switch typ {
		case 'S':
			return string(body), rest, true
		case 'x':
			return append([]byte(nil), body...), rest, true
		case 'F':
			if depth > 4 {
				return nil, nil, false
			}
			return fuzzTable(body, depth+1), rest, true
		default: // 'A': type byte, value, repeated
			if depth > 4 {
				return nil, nil, false
			}
			var arr []any
			for len(body) > 0 {
				v, r, ok := fuzzValue(body[0], body[1:], depth+1)
				if !ok {
					break
				}
				arr = append(arr, v)
				body = r
			}
			return arr, rest, true
		}
	case 'V':
		return nil, b, true
	}
	sizes := map[byte]int{'t': 1, 'b': 1, 'B': 1, 's': 2, 'u': 2, 'I': 4, 'i': 4, 'f': 4, 'l': 8, 'd': 8, 'T': 8, 'G': 8, 'D': 5}
	n, known := sizes[typ]
	if !known {
		return nil, nil, false
	}
	raw, ok := fixed(n)
	if !ok {
		return nil, nil, false
	}
	rest = b[n:]
	switch typ {
	case 't':
		return raw[0] != 0, rest, true
	case 'b':
		return int8(raw[0]), rest, true
	case 'B':
		return raw[0], rest, true
	case 's':
		return int16(binary.BigEndian.Uint16(raw)), rest, true
	case 'u':
		return binary.BigEndian.Uint16(raw), rest, true
	case 'I':
		return int32(binary.BigEndian.Uint32(raw)), rest, true
	case 'i':
		return binary.BigEndian.Uint32(raw), rest, true
	case 'f':
		return math.Float32frombits(binary.BigEndian.Uint32(raw)), rest, true
	case 'l':
		return int64(binary.BigEndian.Uint64(raw)), rest, true
	case 'd':
		return math.Float64frombits(binary.BigEndian.Uint64(raw)), rest, true
	case 'T':
		return time.Unix(int64(binary.BigEndian.Uint64(raw)), 0), rest, true
	case 'G':
		return int(binary.BigEndian.Uint64(raw)), rest, true
	default: // 'D'
		return amqp.Decimal{Scale: raw[0], Value: int32(binary.BigEndian.Uint32(raw[1:]))}, rest, true
	}
}

// FuzzFromDelivery: the header decoder never panics on any delivery and
// keeps its invariants: Key is the ce_partitionkey string header, else the
// routing key; ID is the message-id property, else the ce_id string header,
// else empty; Headers hold exactly the other string headers; Attempt is at
// least 1; the topic is the delivery's exchange when it has one. The seed
// corpus (testdata/fuzz/FuzzFromDelivery) holds foreign producers' headers.
// Run: go test -run '^$' -fuzz FuzzFromDelivery -fuzztime 30s ./adapters/rabbitmq/
func FuzzFromDelivery(f *testing.F) {
	f.Add("order-1", "", "", "orders", []byte{})
	f.Fuzz(func(t *testing.T, routingKey, messageID, typ, exchange string, headers []byte) {
		table := fuzzTable(headers, 0)
		d := &amqp.Delivery{RoutingKey: routingKey, MessageId: messageID, Type: typ, Exchange: exchange,
			Headers: table, Body: headers, DeliveryTag: 7}
		m := fromDelivery(d, "topic", "topic.g")

		wantKey := routingKey
		if s, ok := table[reliable.HeaderKey].(string); ok {
			wantKey = s
		}
		if m.Key != wantKey {
			t.Fatalf("Key %q, want %q", m.Key, wantKey)
		}
		wantID := messageID
		if s, ok := table[reliable.HeaderID].(string); ok && wantID == "" {
			wantID = s
		}
		if m.ID != wantID {
			t.Fatalf("ID %q, want %q", m.ID, wantID)
		}
		wantTopic := "topic"
		if exchange != "" {
			wantTopic = exchange
		}
		if m.Topic != wantTopic {
			t.Fatalf("Topic %q, want %q", m.Topic, wantTopic)
		}
		if m.Delivery.Attempt < 1 {
			t.Fatalf("Attempt %d (x-delivery-count %v), want at least 1", m.Delivery.Attempt, table[headerDeliveryCount])
		}
		mapped := map[string]bool{reliable.HeaderID: true, reliable.HeaderType: true, reliable.HeaderKey: true,
			reliable.HeaderTime: true, reliable.HeaderSpecVersion: true, headerDeliveryCount: true}
		for k, v := range table {
			s, isString := v.(string)
			got, kept := m.Headers[k]
			switch {
			case mapped[k] || !isString:
				if kept {
					t.Fatalf("header %q (%T) kept in Headers", k, v)
				}
			case !kept || got != s:
				t.Fatalf("string header %q = %q, kept %v as %q", k, s, kept, got)
			}
		}
		if len(m.Headers) > len(table) {
			t.Fatalf("Headers %v has entries not in the delivery", m.Headers)
		}
		// A decoded message either passes the wire check or is refused with
		// reasons; it never panics.
		if err := checkWire(m, 0); err != nil && len(err.(*reliable.InvalidMessageError).Problems) == 0 {
			t.Fatalf("checkWire refused without a reason")
		}
	})
}
