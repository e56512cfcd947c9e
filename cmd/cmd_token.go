package cmd

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/beaconhq/beacon/api/client"
	"github.com/spf13/cobra"
)

func newTokenCmd(f *Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Create, list and delete API tokens (management token required)",
		Long: `Tokens are stored hashed in the replicated catalog, so every agent enforces them.
A read token reads everything; a write token also writes the services whose names
start with one of its prefixes. These commands need the management token
(--token or BEACON_TOKEN).`,
	}
	c.AddCommand(newTokenCreateCmd(f, nil), newTokenListCmd(f, nil), newTokenDeleteCmd(f, nil))
	return c
}

type tokenCreateOptions struct {
	f           *Factory
	policy      string
	prefixes    []string
	description string
}

func newTokenCreateCmd(f *Factory, runF func(context.Context, *tokenCreateOptions) error) *cobra.Command {
	opts := &tokenCreateOptions{f: f}
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a token; its secret is printed this once",
		Example: `  beacon token create --policy read --description "dashboards"
  beacon token create --policy write --prefix web- --prefix api- --description "deployer"`,
		Args: exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runTokenCreate(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.policy, "policy", "read", "read or write")
	c.Flags().StringArrayVar(&opts.prefixes, "prefix", nil, "service-name prefix a write token may change (repeatable; \"\" for every service)")
	c.Flags().StringVar(&opts.description, "description", "", "what the token is for")
	return c
}

func runTokenCreate(ctx context.Context, opts *tokenCreateOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	t, err := cl.CreateToken(ctx, &client.TokenRequest{Policy: opts.policy, Prefixes: opts.prefixes, Description: opts.description})
	if err != nil {
		return err
	}
	return opts.f.Print(t, func(w io.Writer) {
		fmt.Fprintf(w, "Accessor:\t%s\n", esc(t.Accessor))
		fmt.Fprintf(w, "Secret:\t%s\n", esc(t.Secret))
		fmt.Fprintf(w, "Policy:\t%s\n", esc(t.Policy))
		if len(t.Prefixes) > 0 {
			fmt.Fprintf(w, "Prefixes:\t%s\n", quotedList(t.Prefixes))
		}
		if t.Description != "" {
			fmt.Fprintf(w, "Description:\t%s\n", esc(t.Description))
		}
		fmt.Fprintln(w, "The secret is shown only now; store it safely.")
	})
}

type tokenListOptions struct{ f *Factory }

func newTokenListCmd(f *Factory, runF func(context.Context, *tokenListOptions) error) *cobra.Command {
	opts := &tokenListOptions{f: f}
	return &cobra.Command{
		Use:   "list",
		Short: "List tokens (without their secrets)",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runTokenList(c.Context(), opts)
		},
	}
}

func runTokenList(ctx context.Context, opts *tokenListOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	ts, err := cl.Tokens(ctx)
	if err != nil {
		return err
	}
	return opts.f.Print(ts, func(w io.Writer) {
		fmt.Fprintln(w, "ACCESSOR\tPOLICY\tPREFIXES\tDESCRIPTION")
		for _, t := range ts {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", esc(t.Accessor), esc(t.Policy), quotedList(t.Prefixes), esc(t.Description))
		}
	})
}

type tokenDeleteOptions struct {
	f        *Factory
	accessor string
}

func newTokenDeleteCmd(f *Factory, runF func(context.Context, *tokenDeleteOptions) error) *cobra.Command {
	opts := &tokenDeleteOptions{f: f}
	return &cobra.Command{
		Use:   "delete ACCESSOR",
		Short: "Delete a token; requests that carry it are refused from then on",
		Args:  exactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.accessor = args[0]
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runTokenDelete(c.Context(), opts)
		},
	}
}

func runTokenDelete(ctx context.Context, opts *tokenDeleteOptions) error {
	cl, err := opts.f.Client()
	if err != nil {
		return err
	}
	idx, err := cl.DeleteToken(ctx, opts.accessor)
	if client.IsNotFound(err) {
		return fmt.Errorf("no such token %s (nothing deleted): check the accessor with 'beacon token list'", opts.accessor)
	}
	if err != nil {
		return err
	}
	return opts.f.Print(client.WriteResult{Index: idx}, func(w io.Writer) {
		fmt.Fprintf(w, "Deleted token %s (index %d)\n", opts.accessor, idx)
	})
}

func quotedList(ps []string) string {
	q := make([]string, len(ps))
	for i, p := range ps {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, ",")
}

type keygenOptions struct {
	f    *Factory
	size int
}

func newKeygenCmd(f *Factory, runF func(*keygenOptions) error) *cobra.Command {
	opts := &keygenOptions{f: f}
	c := &cobra.Command{
		Use:   "keygen",
		Short: "Print a new random gossip encryption key (base64) for --gossip-key",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runKeygen(opts)
		},
	}
	c.Flags().IntVar(&opts.size, "bytes", 32, "key size: 16, 24 or 32 bytes (AES-128, -192, -256)")
	return c
}

func runKeygen(opts *keygenOptions) error {
	if opts.size != 16 && opts.size != 24 && opts.size != 32 {
		return usageError{fmt.Errorf("--bytes must be 16, 24 or 32, not %d", opts.size)}
	}
	key := make([]byte, opts.size)
	_, _ = rand.Read(key)
	_, err := fmt.Fprintln(opts.f.Out, base64.StdEncoding.EncodeToString(key))
	return err
}
