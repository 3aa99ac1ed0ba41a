package kafka

import (
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

func TestHeadersRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	m := &reliable.Message{
		ID: "id-1", Topic: "orders", Key: "order-7", Type: "order.paid", Time: at,
		Headers: map[string]string{"x-b": "2", "x-a": "1", reliable.HeaderID: "spoofed"},
		Payload: []byte("{}"),
	}
	rec := toRecord(m, "prod.orders", "prod")
	if rec.Topic != "prod.orders" {
		t.Fatalf("topic %q", rec.Topic)
	}
	if k, _ := rec.Key.Encode(); string(k) != "order-7" {
		t.Fatalf("record key %q, want the message key", k)
	}
	got := map[string]string{}
	var order []string
	for _, h := range rec.Headers {
		got[string(h.Key)] = string(h.Value)
		order = append(order, string(h.Key))
	}
	want := map[string]string{
		reliable.HeaderID: "id-1", reliable.HeaderType: "order.paid", reliable.HeaderKey: "order-7",
		reliable.HeaderSpecVersion: "1.0", reliable.HeaderTime: "2026-01-02T03:04:05.000006Z",
		reliable.HeaderEnvironment: "prod", "x-a": "1", "x-b": "2",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	if order[len(order)-2] != "x-a" || order[len(order)-1] != "x-b" {
		t.Errorf("application headers not sorted: %v", order)
	}

	hs := make([]*sarama.RecordHeader, len(rec.Headers))
	for i := range rec.Headers {
		hs[i] = &rec.Headers[i]
	}
	back := fromRecord(&sarama.ConsumerMessage{Topic: "prod.orders", Partition: 2, Offset: 9, Key: []byte("order-7"), Value: []byte("{}"), Headers: hs}, "orders")
	if back.ID != "id-1" || back.Topic != "orders" || back.Key != "order-7" || back.Type != "order.paid" || !back.Time.Equal(at) {
		t.Fatalf("round trip: %v time %v", back, back.Time)
	}
	if back.Headers["x-a"] != "1" || back.Headers[reliable.HeaderEnvironment] != "prod" {
		t.Fatalf("headers after round trip: %v", back.Headers)
	}
	if _, ok := back.Headers[reliable.HeaderID]; ok {
		t.Fatalf("ce_id left in Headers: %v", back.Headers)
	}
}

func TestForeignRecordGetsStableID(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	rec := &sarama.ConsumerMessage{Topic: "orders", Partition: 1, Offset: 42, Key: []byte("k"), Value: []byte("v"), Timestamp: ts}
	m := fromRecord(rec, "orders")
	if m.ID != "kafka:orders/1/42" || m.Key != "k" || !m.Time.Equal(ts) || m.Headers != nil {
		t.Fatalf("foreign record: %v %v %v", m, m.Time, m.Headers)
	}
}

// The record key wins over ce_partitionkey, byte for byte; a differing
// ce_partitionkey stays visible in Headers. Without a record key the header
// is the key.
func TestRecordKeyIsMessageKey(t *testing.T) {
	long := []byte{0, 0, 0, 0, 0, 0, 0x30, 0x39}
	rec := &sarama.ConsumerMessage{Topic: "orders", Key: long, Headers: []*sarama.RecordHeader{
		{Key: []byte(reliable.HeaderKey), Value: []byte("12345")},
	}}
	m := fromRecord(rec, "orders")
	if m.Key != string(long) || m.Headers[reliable.HeaderKey] != "12345" {
		t.Fatalf("key %x headers %q", m.Key, m.Headers)
	}
	rec = &sarama.ConsumerMessage{Topic: "orders", Headers: []*sarama.RecordHeader{
		{Key: []byte(reliable.HeaderKey), Value: []byte("order-1")},
	}}
	if m := fromRecord(rec, "orders"); m.Key != "order-1" || m.Headers != nil {
		t.Fatalf("key %q headers %q", m.Key, m.Headers)
	}
}
