package observability_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/reliable-go/reliable/observability"
)

var quiet = slog.New(slog.DiscardHandler)

// bundle is one test's telemetry: recorded spans and a Prometheus endpoint.
type bundle struct {
	tel     *observability.Telemetry
	spans   *tracetest.SpanRecorder
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	metrics http.Handler
}

func setup(t *testing.T) *bundle {
	t.Helper()
	mp, h, err := observability.NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, err := observability.New(observability.Config{MeterProvider: mp, TracerProvider: tp, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	return &bundle{tel: tel, spans: rec, tp: tp, mp: mp, metrics: h}
}

// scrape returns the Prometheus text exposition.
func (b *bundle) scrape(t testing.TB) string {
	t.Helper()
	rr := httptest.NewRecorder()
	b.metrics.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rr.Body)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rr.Code, body)
	}
	return string(body)
}

// sample returns the value of the first line of text that starts with the
// metric name and contains every label (as `name="value"`), or "" if none.
func sample(text, name string, labels ...string) string {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
				break
			}
		}
		if ok {
			return line[strings.LastIndex(line, " ")+1:]
		}
	}
	return ""
}
