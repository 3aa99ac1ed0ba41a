package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// The public helpers name what the adapter prefixes (L07), with and without
// an environment, with the prefix disabled, and back.
func TestEnvironmentNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env     string
		disable bool
		name    string
		want    string
	}{
		{"prod", false, "orders", "prod.orders"},
		{"prod", true, "orders", "orders"},
		{"", false, "orders", "orders"},
		{"staging-eu", false, "kitchen.v2", "staging-eu.kitchen.v2"},
	} {
		cfg := Config{Environment: c.env, DisableEnvironmentPrefix: c.disable}
		if got := cfg.BrokerName(c.name); got != c.want {
			t.Errorf("%+v BrokerName(%q) = %q, want %q", c, c.name, got, c.want)
		}
		// The adapter's own prefix, which publishers and subscribers use.
		if got := cfg.prefix() + c.name; got != cfg.BrokerName(c.name) {
			t.Errorf("%+v: the adapter prefixes %q, BrokerName says %q", c, got, cfg.BrokerName(c.name))
		}
		if !c.disable {
			if got := EnvironmentName(c.env, c.name); got != c.want {
				t.Errorf("EnvironmentName(%q, %q) = %q, want %q", c.env, c.name, got, c.want)
			}
			if got, ok := TrimEnvironment(c.env, c.want); !ok || got != c.name {
				t.Errorf("TrimEnvironment(%q, %q) = %q, %t, want %q, true", c.env, c.want, got, ok, c.name)
			}
		}
	}
	if got, ok := TrimEnvironment("prod", "staging.orders"); ok {
		t.Errorf("TrimEnvironment(prod, staging.orders) = %q, true: another environment's topic", got)
	}
	if got, ok := TrimEnvironment("prod", "production.orders"); ok {
		t.Errorf("TrimEnvironment(prod, production.orders) = %q, true: the separator is part of the prefix", got)
	}
}

// L07: the names BrokerName gives are the ones on the cluster: a message
// published under an environment lands in the topic BrokerName names, and
// the subscriber commits its offset under the group ID BrokerName names.
func TestBrokerNamesAreTheClusterNames(t *testing.T) {
	brokers := kafkaBrokers(t)
	env, topic, group := "h6env", uniqueName("envnames"), uniqueName("envnames-g")
	cfg := testConfig(t)
	cfg.Environment = env
	cfg.Consumer.Group = group
	createTopic(t, brokers, cfg.BrokerName(topic), 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(ctx, &reliable.Message{Topic: topic, Key: "k", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if recs := readAll(t, brokers, cfg.BrokerName(topic)); len(recs) != 1 {
		t.Fatalf("%s holds %d records, want the 1 published to %q under %q", cfg.BrokerName(topic), len(recs), topic, env)
	}

	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ch:
		if d.Message.Topic != topic {
			t.Errorf("delivered topic %q, want the application's %q", d.Message.Topic, topic)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	admin := adminClient(t, brokers)
	offs, err := admin.ListConsumerGroupOffsets(cfg.BrokerName(group), map[string][]int32{cfg.BrokerName(topic): {0}})
	if err != nil {
		t.Fatal(err)
	}
	if b := offs.GetBlock(cfg.BrokerName(topic), 0); b == nil || b.Offset != 1 {
		t.Fatalf("group %s committed %+v on %s, want offset 1", cfg.BrokerName(group), b, cfg.BrokerName(topic))
	}
}
