package reliabletest

// Mutants lists the deliberate defects the mutation check plants in the
// broker, by name, with what each breaks.
var Mutants = []struct {
	Name, Breaks string
	m            mutant
}{
	{"ack-ignored", "Ack returns nil and does nothing", ackIgnored},
	{"commit-skipped", "acked offsets are never committed", commitSkipped},
	{"commit-delivered", "commits what was delivered, acked or not", commitDelivered},
	{"order-shuffled", "every 2nd message swaps with its key's previous one", orderShuffled},
	{"message-dropped", "every 25th message is confirmed but not stored", messageDropped},
	{"nack-ignored", "Nack returns nil and does nothing", nackIgnored},
	{"nack-to-back", "a nacked message goes behind its key's later messages", nackToBack},
	{"redelivered-never", "the Redelivered flag is never set", redeliveredNever},
	{"close-keeps-open", "Close leaves the subscriptions running", closeKeepsOpen},
	{"groups-shared", "all groups of a topic share one position", groupsShared},
	{"no-sharing", "one member of a group gets every partition", noSharing},
	{"restart-loses", "a broker restart forgets unconsumed topics", restartLoses},
	{"canceled-publishes", "Publish ignores an ended context", canceledPublishes},
	{"unknown-topic-created", "publishing creates an unknown topic", unknownTopicCreated},
	{"reconnect-ends", "a dropped connection ends the subscriptions", reconnectEnds},
	{"second-topic-replaces", "a second Subscribe stops the first", secondTopicReplaces},
}

// NewMutantBroker returns a broker with the named defect ("" for none).
func NewMutantBroker(opts BrokerOptions, name string) *Broker {
	b := NewBroker(opts)
	for _, m := range Mutants {
		if m.Name == name {
			b.mutant = m.m
			return b
		}
	}
	if name != "" {
		panic("reliabletest: no mutant " + name)
	}
	return b
}
