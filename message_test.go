package reliable_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/reliable-go/reliable"
)

func TestEnsureIDIsUUIDv7(t *testing.T) {
	m := &reliable.Message{Topic: "orders"}
	id := m.EnsureID()
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 {
		t.Fatalf("ID %q is not a UUIDv7 (%v)", id, err)
	}
	if m.EnsureID() != id {
		t.Fatal("EnsureID replaced an existing ID")
	}
	if a, b := reliable.NewID(), reliable.NewID(); a == b || a > b {
		t.Fatalf("IDs must be unique and increase with time: %s, %s", a, b)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	m := &reliable.Message{ID: "m1", Headers: map[string]string{"": "x"}}
	err := m.Validate()
	var ie *reliable.InvalidMessageError
	if !errors.As(err, &ie) || len(ie.Problems) != 2 || !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("got %v", err)
	}
}

func TestStringHidesPayload(t *testing.T) {
	m := &reliable.Message{ID: "m1", Topic: "orders", Payload: []byte("card=4111111111111111"), Headers: map[string]string{"authorization": "secret"}}
	s := m.String()
	if strings.Contains(s, "4111") || strings.Contains(s, "secret") {
		t.Fatalf("String leaks payload or headers: %s", s)
	}
}

func TestCloneIsDeep(t *testing.T) {
	m := &reliable.Message{Headers: map[string]string{"a": "1"}, Payload: []byte("x")}
	c := m.Clone()
	c.Headers["a"] = "2"
	c.Payload[0] = 'y'
	if m.Headers["a"] != "1" || m.Payload[0] != 'x' {
		t.Fatal("Clone shares headers or payload")
	}
}

func TestCheckEnvironment(t *testing.T) {
	// L07: a pre-release consumer pointed at production messages must refuse them.
	prod := &reliable.Message{ID: "m1", Headers: map[string]string{reliable.HeaderEnvironment: "prod"}}
	if err := reliable.CheckEnvironment(prod, "prod"); err != nil {
		t.Fatal(err)
	}
	err := reliable.CheckEnvironment(prod, "staging")
	if !errors.Is(err, reliable.ErrWrongEnvironment) || !reliable.IsPermanent(err) {
		t.Fatalf("got %v", err)
	}
	if err := reliable.CheckEnvironment(&reliable.Message{}, "staging"); !errors.Is(err, reliable.ErrWrongEnvironment) {
		t.Fatal("an unlabeled message must be refused when an environment is set")
	}
	if err := reliable.CheckEnvironment(prod, ""); err != nil {
		t.Fatal("an empty environment disables the check")
	}
}

func TestDeliverySettlesOnce(t *testing.T) {
	var acks, nacks int
	d := reliable.NewDelivery(&reliable.Message{}, countingAck{&acks, &nacks})
	_ = d.Ack(t.Context())
	_ = d.Ack(t.Context())
	_ = d.Nack(t.Context())
	if acks != 1 || nacks != 0 || !d.Settled() {
		t.Fatalf("acks=%d nacks=%d", acks, nacks)
	}
}

func TestStringQuotesAndCutsForeignKeys(t *testing.T) {
	// A Java long key has NUL bytes; a 3 KB key must not make a 3 KB log line.
	m := &reliable.Message{ID: "m1", Topic: "orders", Key: "\x00\x00\x00\x00\x00\x00\x00*"}
	if s := m.String(); !strings.Contains(s, `key="\x00\x00`) {
		t.Fatalf("binary key not quoted: %s", s)
	}
	m.Key = strings.Repeat("k", 3000)
	if s := m.String(); len(s) > 200 || !strings.Contains(s, "(3000 bytes)") {
		t.Fatalf("long key: %d bytes: %.100s", len(s), s)
	}
}
