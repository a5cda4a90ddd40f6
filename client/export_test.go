package client

import "time"

// SetNow sets c's clock, for tests.
func SetNow(c *Client, now func() time.Time) { c.now = now }

// SetCellChangeFor sets the bound of c's cell changes without a deadline,
// for tests.
func SetCellChangeFor(c *Client, d time.Duration) { c.cellChangeFor = d }
