package kafka

import (
	"fmt"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// specVersion is the CloudEvents version of the ce_ headers.
const specVersion = "1.0"

// toRecord maps m to a Kafka record for topic (the prefixed name). The message
// ID, type, key and time travel as CloudEvents binary-mode headers
// (ce_id, ce_type, ce_partitionkey, ce_time, ce_specversion), which a consumer
// in any language can read; the record key is m.Key, so partitioning follows
// the key. env, when set, is stamped as ce_environment. Application headers
// follow, sorted by name.
func toRecord(m *reliable.Message, topic, env string) *sarama.ProducerMessage {
	hs := make([]sarama.RecordHeader, 0, 6+len(m.Headers))
	add := func(k, v string) {
		hs = append(hs, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
	}
	add(reliable.HeaderID, m.ID)
	add(reliable.HeaderSpecVersion, specVersion)
	if m.Type != "" {
		add(reliable.HeaderType, m.Type)
	}
	if m.Key != "" {
		add(reliable.HeaderKey, m.Key)
	}
	add(reliable.HeaderTime, m.Time.UTC().Format(time.RFC3339Nano))
	if env != "" {
		add(reliable.HeaderEnvironment, env)
	}
	if len(m.Headers) > 0 {
		names := make([]string, 0, len(m.Headers))
		for k := range m.Headers {
			switch k {
			case reliable.HeaderID, reliable.HeaderSpecVersion, reliable.HeaderType, reliable.HeaderKey, reliable.HeaderTime:
				continue // the message's fields win over look-alike headers
			case reliable.HeaderEnvironment:
				if env != "" {
					continue
				}
			}
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			add(k, m.Headers[k])
		}
	}
	rec := &sarama.ProducerMessage{
		Topic:     topic,
		Value:     sarama.ByteEncoder(m.Payload),
		Headers:   hs,
		Timestamp: m.Time,
	}
	if m.Key != "" {
		rec.Key = sarama.StringEncoder(m.Key)
	}
	return rec
}

// recordSize is the size sarama compares with Producer.MaxMessageBytes.
func recordSize(rec *sarama.ProducerMessage) int {
	return rec.ByteSize(2) // record format v2, Kafka >= 0.11
}

// fromRecord maps a consumed record back to a message whose Topic is topic
// (the unprefixed name). A record from a producer that set no ce_id gets the
// ID "kafka:<topic>/<partition>/<offset>" (the Kafka topic name), stable
// across redeliveries, so deduplication still works. Message.Key is the
// record key, byte for byte (a Java LongSerializer key keeps its NUL bytes);
// ce_partitionkey is used only for a record without a key, and kept in
// Headers when it differs from the record key.
func fromRecord(rec *sarama.ConsumerMessage, topic string) *reliable.Message {
	m := &reliable.Message{Topic: topic, Payload: rec.Value}
	if len(rec.Headers) > 0 {
		m.Headers = make(map[string]string, len(rec.Headers))
	}
	for _, h := range rec.Headers {
		if h == nil {
			continue
		}
		k, v := string(h.Key), string(h.Value)
		switch k {
		case reliable.HeaderID:
			m.ID = v
		case reliable.HeaderType:
			m.Type = v
		case reliable.HeaderKey:
			if len(rec.Key) == 0 {
				m.Key = v
			} else if v != string(rec.Key) {
				m.Headers[k] = v
			}
		case reliable.HeaderTime:
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				m.Time = t
			} else {
				m.Headers[k] = v
			}
		default:
			// Everything else, ce_environment included, is kept as sent so
			// the consumer pipeline can check it (reliable.CheckEnvironment).
			m.Headers[k] = v
		}
	}
	if len(rec.Key) > 0 {
		m.Key = string(rec.Key)
	}
	if m.ID == "" {
		m.ID = fmt.Sprintf("kafka:%s/%d/%d", rec.Topic, rec.Partition, rec.Offset)
	}
	if m.Time.IsZero() {
		m.Time = rec.Timestamp
	}
	if len(m.Headers) == 0 {
		m.Headers = nil
	}
	return m
}
