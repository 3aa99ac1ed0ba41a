package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/reliable-go/reliable/examples/orders"
)

const chromiumPath = "/usr/bin/chromium"

// artifactsDir is where the screenshot goes: $RELIABLE_ARTIFACTS_DIR, or
// examples/testdata/artifacts (git-ignored).
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("RELIABLE_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The kitchen page in headless Chromium: an order created through the order
// service's API appears on the page, moves through its states live (server-
// sent events), and a dish is marked served from the page. A screenshot is
// saved as a test artifact.
func TestBrowserKitchenDisplay(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("RELIABLE_REQUIRE_BROWSER") == "1" {
			t.Fatalf("%s not found and RELIABLE_REQUIRE_BROWSER=1: run examples/scripts/install-browser.sh", chromiumPath)
		}
		t.Skipf("%s not found: run examples/scripts/install-browser.sh (Debian chromium and chromium-driver) to run the browser test", chromiumPath)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	cfg := testConfig(0)
	cfg.FailRate, cfg.StaleRate = 0, 0 // the page, not the faults, is under test here
	a, err := start(ctx, cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	api := &orders.Client{BaseURL: a.ordersURL}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	// The first call starts the browser, which lives as long as its context:
	// make it on the test's context, and bound each later step on its own.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	within := func() (context.Context, context.CancelFunc) { return context.WithTimeout(browser, 20*time.Second) }
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := within()
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }
	step("open the kitchen page", chromedp.Navigate(a.kitchenURL), visible(`#live.on`))

	o, err := api.Place(ctx, "12", []orders.Dish{{Name: "Ramen", Quantity: 2}, {Name: "Gyoza", Quantity: 1}})
	if err != nil {
		t.Fatal(err)
	}
	card := func(status string) string {
		return fmt.Sprintf(`section[data-column=%q] .card[data-order-id=%q][data-status=%q]`, status, o.ID, status)
	}
	step("see the new order", visible(card("placed")))
	sctx, scancel := within()
	text, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(card("placed"))))
	scancel()
	if err != nil {
		t.Fatalf("read the card: %v", err)
	}
	for _, want := range []string{"2× Ramen", "1× Gyoza", "table 12"} {
		if !strings.Contains(text, want) {
			t.Errorf("card %q lacks %q", text, want)
		}
	}

	if _, err := api.Move(ctx, o.ID, "pay"); err != nil {
		t.Fatal(err)
	}
	step("see it paid", visible(card("paid")))
	step("serve the ramen from the page",
		chromedp.Click(chromedp.CSS(card("paid")+` button[data-dish="0"]`)),
		visible(card("paid")+` li.served`))

	// A few more orders, so the screenshot shows every column.
	for i, moves := range [][]string{{}, {"pay"}, {"cancel"}} {
		x, err := api.Place(ctx, fmt.Sprint(3+i), []orders.Dish{{Name: menu[i], Quantity: 1 + i}, {Name: menu[i+4], Quantity: 1}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range moves {
			if _, err := api.Move(ctx, x.ID, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := api.Move(ctx, o.ID, "complete"); err != nil {
		t.Fatal(err)
	}
	step("see it completed, the served dish still served",
		visible(card("completed")),
		visible(card("completed")+` li.served`),
		visible(`section[data-column="cancelled"] .card`),
		visible(`section[data-column="placed"] .card`))
	sctx, scancel = within()
	defer scancel()
	n, err := chromedp.Run(sctx, chromedp.Evaluate[int](`document.querySelectorAll(".card").length`))
	if err != nil || n != 4 {
		t.Errorf("the page shows %d orders (%v), want 4", n, err)
	}

	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactsDir(t), "kitchen-display.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}
