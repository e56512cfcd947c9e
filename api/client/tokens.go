package client

import (
	"context"
	"net/http"
	"net/url"
)

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	// Policy is "read" (every read route) or "write" (reads, and writes to
	// the services whose names start with one of Prefixes).
	Policy string `json:"policy"`
	// Prefixes are service-name prefixes a write token may change; "" covers
	// every service. A read token has none.
	Prefixes    []string `json:"prefixes,omitempty"`
	Description string   `json:"description,omitempty"`
}

// Token describes a stored token. Its secret is never shown again after
// creation; the agents keep only its SHA-256.
type Token struct {
	Accessor    string   `json:"accessor"`
	Policy      string   `json:"policy"`
	Prefixes    []string `json:"prefixes"`
	Description string   `json:"description"`
	CreateIndex uint64   `json:"create_index"`
	ModifyIndex uint64   `json:"modify_index"`
}

// TokenCreated is the answer to POST /v1/tokens: the token and, this once,
// its secret.
type TokenCreated struct {
	Token
	// Secret is what clients send as "Authorization: Bearer SECRET".
	Secret string `json:"secret"`
	Index  uint64 `json:"index"`
}

// CreateToken creates a token (management token only) and returns it with
// its secret, which is shown only this once.
func (c *Client) CreateToken(ctx context.Context, req *TokenRequest) (*TokenCreated, error) {
	var out TokenCreated
	if _, err := c.do(ctx, http.MethodPost, "/v1/tokens", url.Values{}, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tokens lists the stored tokens (management token only), without secrets.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out []Token
	_, err := c.do(ctx, http.MethodGet, "/v1/tokens", url.Values{}, nil, &out)
	return out, err
}

// DeleteToken deletes the token with this accessor (management token only).
// Deleting a token that does not exist is an *Error with status 404 (code
// not_found; IsNotFound): nothing was deleted.
func (c *Client) DeleteToken(ctx context.Context, accessor string) (uint64, error) {
	var res WriteResult
	// "{}": see RemovePeer.
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(accessor), url.Values{}, struct{}{}, &res)
	return res.Index, err
}
