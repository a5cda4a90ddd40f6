package client

import "time"

// SetNow sets c's clock, for tests.
func SetNow(c *Client, now func() time.Time) { c.now = now }

// SetCellChangeFor sets the bound of c's cell changes without a deadline,
// for tests.
func SetCellChangeFor(c *Client, d time.Duration) { c.cellChangeFor = d }

// SetCellFollowFor sets the bound of c's calls to a cell without a
// deadline, for tests.
func SetCellFollowFor(c *Client, d time.Duration) { c.cellFollowFor = d }

// SetCellAskWait sets the bound of each question c's CellMembers asks,
// for tests.
func SetCellAskWait(c *Client, d time.Duration) { c.cellAskWait = d }

// SetCellDoubtFor sets how long c retries a cell's send in doubt, for
// tests.
func SetCellDoubtFor(c *Client, d time.Duration) { c.cellDoubtFor = d }
