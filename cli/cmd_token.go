package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/store"
)

func cmdToken() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "manage the tokens `heft serve` accepts",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "print a new token (only the token, on stdout)",
				Flags: commonFlags(
					&cli.StringFlag{Name: "scope", Value: "read", Usage: "read or write"},
					&cli.StringSliceFlag{Name: "namespace", Usage: "namespace (the ORG of ORG/NAME) the token may access; repeatable; * for all", Required: true},
					&cli.StringFlag{Name: "name", Usage: "a unique name for listings and revoke (default: generated)"},
					&cli.StringFlag{Name: "user", Usage: "identity reported by whoami (default: the first namespace)"},
					&cli.DurationFlag{Name: "expires-in", Usage: "lifetime (default: no expiry)"},
				),
				Action: withStore(0, "token create takes no arguments", func(c *cli.Context, e *env, s *store.Store) error {
					role, err := hub.ParseRole(c.String("scope"))
					if err != nil {
						return usagef("--scope: %v", err)
					}
					nss := c.StringSlice("namespace")
					grants := make([]hub.Grant, len(nss))
					for i, ns := range nss {
						grants[i] = hub.Grant{Namespace: ns, Role: role}
					}
					name := c.String("name")
					if name == "" {
						name = fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(nss[0], "*", "all"), role, time.Now().UnixNano()%1e9)
					}
					user := c.String("user")
					if user == "" {
						user = strings.ReplaceAll(nss[0], "*", "admin")
					}
					tokens, err := openTokens(s)
					if err != nil {
						return err
					}
					tok, info, err := tokens.Create(name, user, grants, c.Duration("expires-in"))
					if err != nil {
						return usagef("%v", err)
					}
					if e.json {
						return e.printJSON(map[string]any{"token": tok, "id": info.ID, "name": info.Name, "user": info.User})
					}
					fmt.Fprintln(e.stdout, tok)
					return nil
				}),
			},
			{
				Name:  "ls",
				Usage: "list tokens (never their secrets)",
				Flags: commonFlags(),
				Action: withStore(0, "token ls takes no arguments", func(c *cli.Context, e *env, s *store.Store) error {
					tokens, err := openTokens(s)
					if err != nil {
						return err
					}
					list, err := tokens.List()
					if err != nil {
						return err
					}
					if e.json {
						return e.printJSON(list)
					}
					rows := [][]string{}
					for _, t := range list {
						var gs []string
						for _, g := range t.Grants {
							gs = append(gs, g.Namespace+":"+g.Role.String())
						}
						exp := "never"
						if !t.Expires.IsZero() {
							exp = t.Expires.UTC().Format(time.RFC3339)
						}
						rows = append(rows, []string{t.ID, t.Name, t.User, strings.Join(gs, ","), t.Created.UTC().Format(time.RFC3339), exp})
					}
					e.table([]string{"ID", "NAME", "USER", "GRANTS", "CREATED", "EXPIRES"}, rows)
					return nil
				}),
			},
			{
				Name:      "revoke",
				Usage:     "revoke a token by id or name (a running server refuses it at the next request)",
				ArgsUsage: "ID|NAME",
				Flags:     commonFlags(),
				Action: withStore(1, "token revoke takes one ID or NAME", func(c *cli.Context, e *env, s *store.Store) error {
					tokens, err := openTokens(s)
					if err != nil {
						return err
					}
					info, err := tokens.Revoke(c.Args().First())
					if err != nil {
						return usagef("%v", err)
					}
					if e.json {
						return e.printJSON(info)
					}
					fmt.Fprintf(e.stdout, "revoked %s (%s)\n", info.ID, info.Name)
					return nil
				}),
			},
		},
	}
}
