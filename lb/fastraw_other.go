//go:build !linux

package lb

// runWatchDup is Linux's; elsewhere the raw loop is off (connlimit.RawConn
// is nil) and the watch reads the connection.
func (c *fastConn) runWatchDup(done chan struct{}) { c.runWatch(done) }
