package client

import "time"

// SetNow sets c's clock, for tests.
func SetNow(c *Client, now func() time.Time) { c.now = now }
