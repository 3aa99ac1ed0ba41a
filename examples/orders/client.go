package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls the order service's HTTP API. The kitchen uses it to fetch
// order details (L13: events carry none).
type Client struct {
	// BaseURL is the service's address, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// HTTP defaults to http.DefaultClient. Give it a timeout.
	HTTP *http.Client
}

// Get returns an order's details. A 404 is ErrNotFound, which a consumer
// should treat as "not visible yet" (a lagging replica, L21), not as gone.
func (c *Client) Get(ctx context.Context, id string) (Order, error) {
	var o Order
	err := c.do(ctx, http.MethodGet, "/orders/"+url.PathEscape(id), nil, &o)
	return o, err
}

// Place creates an order.
func (c *Client) Place(ctx context.Context, table string, dishes []Dish) (Order, error) {
	var o Order
	err := c.do(ctx, http.MethodPost, "/orders", PlaceRequest{Table: table, Dishes: dishes}, &o)
	return o, err
}

// Move changes an order's state; action is "pay", "complete" or "cancel".
func (c *Client) Move(ctx context.Context, id, action string) (Order, error) {
	var o Order
	err := c.do(ctx, http.MethodPost, "/orders/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &o)
	return o, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("orders client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s", ErrNotFound, path)
		case http.StatusConflict:
			return fmt.Errorf("%w: %s", ErrTransition, e.Error)
		case http.StatusBadRequest:
			return fmt.Errorf("%w: %s", ErrInvalid, e.Error)
		}
		return fmt.Errorf("orders client: %s %s: HTTP %d: %s", method, path, resp.StatusCode, e.Error)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("orders client: %s %s: decode: %w", method, path, err)
	}
	return nil
}
