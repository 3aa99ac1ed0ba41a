package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// decodeFuzzHeaders turns fuzz bytes into record headers: per header a flags
// byte (bit 0: nil key, bit 1: nil value, bit 2: nil *RecordHeader), a
// 2-byte big-endian key length, the key, a 4-byte big-endian value length,
// the value. Lengths are cut to what is left; a truncated tail ends the list.
func decodeFuzzHeaders(b []byte) []*sarama.RecordHeader {
	var hs []*sarama.RecordHeader
	take := func(n int) []byte {
		n = min(n, len(b))
		v := b[:n:n]
		b = b[n:]
		return v
	}
	for len(b) >= 3 {
		flags := b[0]
		kl := int(binary.BigEndian.Uint16(b[1:3]))
		b = b[3:]
		key := take(kl)
		if len(b) < 4 {
			b = nil
		}
		var value []byte
		if b != nil {
			vl := int(binary.BigEndian.Uint32(b[:4]) & 0x7fffffff)
			b = b[4:]
			value = take(vl)
		}
		if flags&4 != 0 {
			hs = append(hs, nil)
			continue
		}
		if flags&1 != 0 {
			key = nil
		}
		if flags&2 != 0 {
			value = nil
		}
		hs = append(hs, &sarama.RecordHeader{Key: key, Value: value})
	}
	return hs
}

// encodeFuzzHeaders is the inverse of decodeFuzzHeaders, for seeds.
func encodeFuzzHeaders(hs ...*sarama.RecordHeader) []byte {
	var b bytes.Buffer
	for _, h := range hs {
		if h == nil {
			b.Write([]byte{4, 0, 0, 0, 0, 0, 0})
			continue
		}
		var flags byte
		if h.Key == nil {
			flags |= 1
		}
		if h.Value == nil {
			flags |= 2
		}
		b.WriteByte(flags)
		_ = binary.Write(&b, binary.BigEndian, uint16(len(h.Key)))
		b.Write(h.Key)
		_ = binary.Write(&b, binary.BigEndian, uint32(len(h.Value)))
		b.Write(h.Value)
	}
	return b.Bytes()
}

func hdr(k, v string) *sarama.RecordHeader {
	return &sarama.RecordHeader{Key: []byte(k), Value: []byte(v)}
}

// Issue 13: fromRecord decodes headers from any producer without panicking
// and keeps its invariants: the ID is never empty (the last non-empty ce_id,
// else "kafka:<topic>/<partition>/<offset>"), the record key is Message.Key
// byte for byte (ce_partitionkey only without one), the payload is the
// record value, no ce_id or ce_type is left in Headers, an empty Headers is
// nil, the same record always decodes the same way (redeliveries
// deduplicate), and a decoded message survives toRecord and fromRecord again
// with the same ID, key, type and payload. The committed corpus in
// testdata/fuzz/FuzzFromRecord holds foreign producers' headers: missing,
// binary, duplicated names, oversized, invalid UTF-8, nil names and values.
func FuzzFromRecord(f *testing.F) {
	javaLong := []byte{0, 0, 0, 0, 0, 0, 0x30, 0x39}
	f.Add([]byte("order-1"), []byte("{}"), encodeFuzzHeaders(hdr(reliable.HeaderID, "id-1"), hdr(reliable.HeaderType, "t"), hdr(reliable.HeaderTime, "2026-01-02T03:04:05Z")), int64(7))
	f.Add(javaLong, []byte("v"), []byte(nil), int64(0))
	f.Add([]byte{0xff, 0xfe}, []byte{0, 1}, encodeFuzzHeaders(hdr(reliable.HeaderID, "a"), hdr(reliable.HeaderID, ""), hdr("x", "\xff")), int64(1))
	f.Add([]byte(nil), []byte(nil), encodeFuzzHeaders(&sarama.RecordHeader{}, nil, hdr(reliable.HeaderKey, "k")), int64(-1))
	f.Fuzz(func(t *testing.T, key, value, rawHeaders []byte, offset int64) {
		const topic, kafkaTopic, partition = "orders", "prod.orders", int32(3)
		ts := time.Unix(1700000000, 0)
		rec := &sarama.ConsumerMessage{Topic: kafkaTopic, Partition: partition, Offset: offset, Key: key, Value: value,
			Headers: decodeFuzzHeaders(rawHeaders), Timestamp: ts}
		m := fromRecord(rec, topic)

		wantID, headerKey := "", ""
		for _, h := range rec.Headers {
			if h == nil {
				continue
			}
			switch string(h.Key) {
			case reliable.HeaderID:
				wantID = string(h.Value)
			case reliable.HeaderKey:
				headerKey = string(h.Value)
			}
		}
		if wantID == "" {
			wantID = fmt.Sprintf("kafka:%s/%d/%d", kafkaTopic, partition, offset)
		}
		if m.ID != wantID {
			t.Fatalf("ID %q, want %q", m.ID, wantID)
		}
		wantKey := string(key)
		if len(key) == 0 {
			wantKey = headerKey
		}
		if m.Key != wantKey {
			t.Fatalf("key %x, want %x", m.Key, wantKey)
		}
		if m.Topic != topic || !bytes.Equal(m.Payload, value) {
			t.Fatalf("topic %q payload %x", m.Topic, m.Payload)
		}
		if m.Headers != nil && len(m.Headers) == 0 {
			t.Fatal("empty Headers is not nil")
		}
		for _, k := range []string{reliable.HeaderID, reliable.HeaderType} {
			if _, ok := m.Headers[k]; ok {
				t.Fatalf("%s left in Headers", k)
			}
		}
		// Other headers: every name is there with its last value.
		last := map[string]string{}
		for _, h := range rec.Headers {
			if h != nil && !bytes.HasPrefix(h.Key, []byte("ce_")) {
				last[string(h.Key)] = string(h.Value)
			}
		}
		for k, v := range last {
			if got, ok := m.Headers[k]; !ok || got != v {
				t.Fatalf("header %q = %q (present %t), want the last value %q", k, got, ok, v)
			}
		}
		if m.Time.IsZero() {
			t.Fatal("time is zero")
		}
		again := fromRecord(rec, topic)
		if again.ID != m.ID || again.Key != m.Key || again.Type != m.Type || !again.Time.Equal(m.Time) || len(again.Headers) != len(m.Headers) {
			t.Fatalf("decoding is not deterministic: %v vs %v", m, again)
		}

		// Round trip through the SDK's encoding.
		pm := toRecord(m, kafkaTopic, "")
		var k2 []byte
		if pm.Key != nil {
			k2, _ = pm.Key.Encode()
		}
		v2, _ := pm.Value.Encode()
		hs := make([]*sarama.RecordHeader, len(pm.Headers))
		for i := range pm.Headers {
			hs[i] = &pm.Headers[i]
		}
		back := fromRecord(&sarama.ConsumerMessage{Topic: kafkaTopic, Partition: partition, Offset: offset + 1, Key: k2, Value: v2, Headers: hs, Timestamp: ts}, topic)
		if back.ID != m.ID || back.Key != m.Key || back.Type != m.Type || !bytes.Equal(back.Payload, m.Payload) {
			t.Fatalf("round trip: %v -> %v", m, back)
		}
		if recordSize(pm) <= 0 {
			t.Fatal("record size not positive")
		}
	})
}
