package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQServer controls the local RabbitMQ server that scripts/services.sh runs,
// for fault tests. Methods may be called from any goroutine and return errors rather
// than failing the test.
type RabbitMQServer struct {
	amqpURL string
	mgmtURL string
	script  string
	env     []string
	http    *http.Client
}

// RabbitMQ returns control over the local RabbitMQ server. The test holds RabbitMQ
// exclusively until it ends (other packages' RabbitMQ tests wait), since restarting
// the server or closing all connections would break them. When the test ends the
// server is started again if the test left it stopped.
//
// Without a local server (no env file, or RabbitMQ in a container) the test skips,
// or fails under RELIABLE_REQUIRE_SERVICES=1.
func RabbitMQ(t testing.TB) *RabbitMQServer {
	t.Helper()
	amqpURL, src := find(t, "RabbitMQ", EnvAMQPURL)
	mgmtURL, _ := find(t, "RabbitMQ management API", EnvRabbitMQManagementURL)
	if src != viaLocal {
		unavailable(t, "testenv: RabbitMQ runs in a container: no server control; %s", howToStart)
	}
	script := servicesScript()
	if script == "" {
		unavailable(t, "testenv: cannot control RabbitMQ: scripts/services.sh not found (%s)", EnvServicesScript)
	}
	lockService(t, "rabbitmq", lockExclusive)
	probe(t, "RabbitMQ", EnvAMQPURL, amqpURL, urlHostPort("5672"))
	r := &RabbitMQServer{
		amqpURL: amqpURL,
		mgmtURL: strings.TrimSuffix(mgmtURL, "/"),
		script:  script,
		env:     scriptEnv(),
		http:    &http.Client{Timeout: 10 * time.Second},
	}
	// Wait until it answers fully (management API included).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("testenv: RabbitMQ is not running before the test: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := r.Start(ctx); err != nil {
			t.Errorf("testenv: starting RabbitMQ again after the test: %v", err)
		}
	})
	return r
}

// AMQPURL returns the AMQP URL of the server.
func (r *RabbitMQServer) AMQPURL() string { return r.amqpURL }

// ManagementURL returns the base URL of the management HTTP API, with credentials.
func (r *RabbitMQServer) ManagementURL() string { return r.mgmtURL }

// Restart stops the whole server (the Erlang VM included: every connection drops,
// non-durable queues and transient messages are gone) and starts it again, then
// waits until AMQP and the management API answer. Takes about 15 s.
func (r *RabbitMQServer) Restart(ctx context.Context) error {
	if err := runScript(ctx, r.script, r.env, "rabbitmq-restart"); err != nil {
		return err
	}
	return r.WaitReady(ctx)
}

// Stop stops the server and returns when its AMQP port is closed.
func (r *RabbitMQServer) Stop(ctx context.Context) error {
	return runScript(ctx, r.script, r.env, "rabbitmq-stop")
}

// Start starts the server (a no-op when it runs) and waits until it answers.
func (r *RabbitMQServer) Start(ctx context.Context) error {
	if err := runScript(ctx, r.script, r.env, "rabbitmq-start"); err != nil {
		return err
	}
	return r.WaitReady(ctx)
}

// WaitReady waits until an AMQP connection can be opened and the management API
// answers.
func (r *RabbitMQServer) WaitReady(ctx context.Context) error {
	var lastErr error
	for {
		lastErr = r.ping(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for RabbitMQ: %w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *RabbitMQServer) ping(ctx context.Context) error {
	conn, err := amqp.DialConfig(r.amqpURL, amqp.Config{
		Dial:       amqp.DefaultDial(3 * time.Second),
		Properties: amqp.Table{"connection_name": "reliable-testenv-ping"},
	})
	if err != nil {
		return err
	}
	_ = conn.Close()
	var overview map[string]any
	return r.api(ctx, http.MethodGet, "/api/overview", &overview)
}

// RabbitConnection is one client connection as the management API lists it.
type RabbitConnection struct {
	Name             string         `json:"name"`
	User             string         `json:"user"`
	VHost            string         `json:"vhost"`
	State            string         `json:"state"`
	ClientProperties map[string]any `json:"client_properties"`
}

// ConnectionName returns the connection_name client property ("" if unset).
func (c RabbitConnection) ConnectionName() string {
	s, _ := c.ClientProperties["connection_name"].(string)
	return s
}

// Connections lists the client connections. The management API learns of a new
// connection within milliseconds, but poll if a test needs one to be listed.
func (r *RabbitMQServer) Connections(ctx context.Context) ([]RabbitConnection, error) {
	var conns []RabbitConnection
	err := r.api(ctx, http.MethodGet, "/api/connections?columns=name,user,vhost,state,client_properties", &conns)
	return conns, err
}

// CloseConnections force-closes every connection for which match returns true (all
// when match is nil), as an operator would from the management UI: clients see a
// connection.close with reply code 320 (CONNECTION_FORCED). It returns how many it
// closed.
func (r *RabbitMQServer) CloseConnections(ctx context.Context, match func(RabbitConnection) bool) (int, error) {
	conns, err := r.Connections(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range conns {
		if match != nil && !match(c) {
			continue
		}
		err := r.api(ctx, http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name), nil)
		if err != nil && !strings.Contains(err.Error(), "404") {
			return n, err
		}
		n++
	}
	return n, nil
}

// CloseAllConnections force-closes every client connection.
func (r *RabbitMQServer) CloseAllConnections(ctx context.Context) (int, error) {
	return r.CloseConnections(ctx, nil)
}

// api calls the management API; out, when not nil, receives the decoded JSON body.
func (r *RabbitMQServer) api(ctx context.Context, method, path string, out any) error {
	return managementCall(ctx, r.http, r.mgmtURL, method, path, out)
}

func managementCall(ctx context.Context, hc *http.Client, base, method, path string, out any) error {
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	user := u.User
	u.User = nil
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(u.String(), "/")+path, nil)
	if err != nil {
		return err
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	req.Header.Set("X-Reason", "reliable-go testenv")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
