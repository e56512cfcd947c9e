package client

// FirstAddress returns the host:port the client's next call starts with
// (for tests that need a known order).
func (c *Client) FirstAddress() string {
	return c.bases[int(c.cur.Load())%len(c.bases)].Host
}
