package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strconv"

	"github.com/beaconhq/beacon/api/client"
)

// CodeHTTPSRequired is the error code of the answer to a plain HTTP
// request on the HTTPS API (Config.TLS).
const CodeHTTPSRequired = "https_required"

// plainHTTPAnswer is that answer: 400 with a JSON error like every other,
// marked as the agent's (client.HeaderAgent), so that a client can tell
// the user to speak HTTPS. It says "Client sent an HTTP request to an
// HTTPS server", as net/http's own answer does.
var plainHTTPAnswer = func() []byte {
	body, _ := json.Marshal(client.ErrorBody{
		Error: "client sent an HTTP request to an HTTPS server: this agent's API speaks HTTPS " +
			"(use https://, and trust the agent's CA: beacon --ca-cert FILE, curl --cacert FILE)",
		Code: CodeHTTPSRequired,
	})
	body = append(body, '\n')
	return []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n" +
		client.HeaderAgent + ": 1\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body))
}()

// tlsConnKey carries, in a connection's context, the TLS connection under
// a wrapper net/http does not see through: a parked blocking query's
// connection, resumed with the bytes the client had pipelined behind it
// (prefixConn, park.go).
type tlsConnKey struct{}

// connContext is the API's http.Servers' ConnContext: it notes a TLS
// connection under a wrapper, so that withTLSState fills Request.TLS as
// net/http does for a bare *tls.Conn.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if _, bare := c.(*tls.Conn); bare {
		return ctx
	}
	if tc := tlsConnOf(c); tc != nil {
		return context.WithValue(ctx, tlsConnKey{}, tc)
	}
	return ctx
}

// withTLSState fills r.TLS for a request that came over a wrapped TLS
// connection (connContext).
func withTLSState(r *http.Request) {
	if r.TLS != nil {
		return
	}
	if tc, ok := r.Context().Value(tlsConnKey{}).(*tls.Conn); ok {
		st := tc.ConnectionState()
		r.TLS = &st
	}
}
