package rabbitmq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	neturl "net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/producer"
)

// mgmtJSON calls the management API with a JSON body.
func mgmtJSON(t *testing.T, method, path string, body any) {
	t.Helper()
	base, err := neturl.Parse(strings.TrimRight(testenv.RabbitMQManagementURL(t), "/"))
	if err != nil {
		t.Fatal(err)
	}
	user := base.User
	base.User = nil
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, base.String()+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("management %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("management %s %s: %s", method, path, resp.Status)
	}
}

// TestForbiddenTopicRefused: publishing to an exchange the user may not
// write to makes the broker close the confirm channel (403
// ACCESS_REFUSED), which fails every message in flight on it. Before, the
// message came back as merely not confirmed, so the producer retried it
// until its context ended, closing the shared channel under the other
// publishes again and again. Now the refusal is remembered for the topic:
// the retry fails at once with reliable.ErrNotAuthorized (permanent), and
// the concurrent good publishes all succeed.
func TestForbiddenTopicRefused(t *testing.T) {
	allowed, forbidden := uniqueName("perm-ok"), uniqueName("perm-no")
	declareTopic(t, Topology{}, allowed, "g")
	declareTopic(t, Topology{}, forbidden, "g")
	user := uniqueName("reliable-test-limited")
	mgmtJSON(t, http.MethodPut, "/api/users/"+neturl.PathEscape(user), map[string]string{"password": "limited-pw", "tags": ""})
	t.Cleanup(func() { mgmt(t, http.MethodDelete, "/api/users/"+neturl.PathEscape(user), nil) })
	mgmtJSON(t, http.MethodPut, "/api/permissions/%2F/"+neturl.PathEscape(user), map[string]string{
		"configure": "^$", "write": "^" + regexp.QuoteMeta(allowed) + "$", "read": ".*"})
	uri, err := amqp.ParseURI(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	uri.Username, uri.Password = user, "limited-pw"

	pub, err := NewPublisher(uri.String(), WithLogger(discardLogger()), WithConfirmChannels(1))
	if err != nil {
		t.Fatal(err)
	}
	prod, err := producer.New(pub, producer.Config{Backoff: fastRetry, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var goodErrs []error
	good := 0
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := prod.Publish(ctx, &reliable.Message{Topic: allowed, Key: "k", Payload: []byte("ok")})
				mu.Lock()
				good++
				if err != nil {
					goodErrs = append(goodErrs, err)
				}
				mu.Unlock()
			}
		}()
	}
	goodCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return good
	}
	waitGood := func(n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for goodCount() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d good publishes", goodCount())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitGood(50) // they flow when the forbidden one comes
	short, cancelShort := context.WithTimeout(ctx, 10*time.Second)
	start := time.Now()
	err = prod.Publish(short, &reliable.Message{Topic: forbidden, Key: "k", Payload: []byte("no")})
	took := time.Since(start)
	cancelShort()
	waitGood(goodCount() + 200) // and go on flowing after it
	close(stop)
	wg.Wait()
	if !errors.Is(err, reliable.ErrNotAuthorized) || !reliable.IsPermanent(err) {
		t.Fatalf("forbidden topic after %s: %v, want ErrNotAuthorized", took, err)
	}
	if took > 5*time.Second {
		t.Fatalf("forbidden topic refused after %s", took)
	}
	if len(goodErrs) > 0 {
		t.Fatalf("%d of %d good publishes failed, first: %v", len(goodErrs), good, goodErrs[0])
	}
	t.Logf("forbidden topic refused after %s: %v; %d good publishes all confirmed", took.Round(time.Millisecond), err, good)
}
