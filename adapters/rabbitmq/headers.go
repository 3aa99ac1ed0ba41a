package rabbitmq

import (
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// specVersion is the CloudEvents version the headers follow.
const specVersion = "1.0"

// headerDeliveryCount is the header quorum queues set on a redelivered
// message: how many times it was delivered and returned before.
const headerDeliveryCount = "x-delivery-count"

// routingKey is the key a message is published with: its Key, so a
// consistent-hash exchange keeps a key on one shard queue.
func routingKey(m *reliable.Message) string { return m.Key }

// toPublishing maps m to an AMQP message: persistent (L02), the ID as the
// message-id property (returns are correlated by it), and the SDK's fields
// as CloudEvents headers so consumers in any language can read them.
func toPublishing(m *reliable.Message) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+5)
	for k, v := range m.Headers {
		h[k] = v
	}
	h[reliable.HeaderID] = m.ID
	h[reliable.HeaderSpecVersion] = specVersion
	h[reliable.HeaderTime] = m.Time.UTC().Format(time.RFC3339Nano)
	if m.Key != "" {
		h[reliable.HeaderKey] = m.Key
	}
	if m.Type != "" {
		h[reliable.HeaderType] = m.Type
	}
	return amqp.Publishing{
		Headers:      h,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Type:         m.Type,
		Timestamp:    m.Time,
		Body:         m.Payload,
	}
}

// fromDelivery maps an AMQP delivery back to a message. Headers keep every
// string-valued header except the ones mapped to fields; broker headers with
// other types (x-death, x-delivery-count) are read into DeliveryInfo or
// dropped.
//
// Messages of other clients: without the key header, Key is the routing
// key; without a message-id property or ce_id header, ID stays empty (the
// consumer then handles the message without deduplication).
func fromDelivery(d *amqp.Delivery, topic, queue string) *reliable.Message {
	m := &reliable.Message{
		ID:      d.MessageId,
		Topic:   topic,
		Type:    d.Type,
		Payload: d.Body,
		Time:    d.Timestamp,
	}
	if d.Exchange != "" {
		m.Topic = d.Exchange
	}
	deliveries := int64(0)
	keyed := false
	for k, v := range d.Headers {
		switch k {
		case reliable.HeaderID:
			if s, ok := v.(string); ok && m.ID == "" {
				m.ID = s
			}
			continue
		case reliable.HeaderType:
			if s, ok := v.(string); ok && m.Type == "" {
				m.Type = s
			}
			continue
		case reliable.HeaderKey:
			if s, ok := v.(string); ok {
				m.Key = s
				keyed = true
			}
			continue
		case reliable.HeaderTime:
			if s, ok := v.(string); ok {
				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
					m.Time = t
				}
			}
			continue
		case reliable.HeaderSpecVersion:
			continue
		case headerDeliveryCount:
			deliveries = toInt64(v)
			continue
		}
		s, ok := v.(string)
		if !ok {
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, len(d.Headers))
		}
		m.Headers[k] = s
	}
	if !keyed {
		// Another client's message: its routing key is its key, as the SDK
		// publishes a message's key as its routing key.
		m.Key = d.RoutingKey
	}
	m.Delivery = reliable.DeliveryInfo{
		Offset:      int64(d.DeliveryTag),
		Queue:       queue,
		Attempt:     int(deliveries) + 1,
		Redelivered: d.Redelivered || deliveries > 0,
		ReceivedAt:  time.Now(),
	}
	return m
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int16:
		return int64(n)
	case int8:
		return int64(n)
	case int:
		return int64(n)
	case uint8:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}
